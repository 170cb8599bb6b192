"""DCGAN (paper 000): 100-d noise -> tumour tiles; Adam 2e-4 β1 0.5, label smoothing, D dropout.

Variants: default (64 px, a few thousand steps on CPU), `:smoke` (16 px, seconds), `:paper`
(128 px; paper 000 trained 3,000 epochs on 100 tumour images; its batch size is not stated,
32 is assumed here, so 3,000 epochs ≈ 9,375 steps), `:phantom64` (the CPU quality check on the
phantom: 64 px, narrow nets, DiffAugment, FID curve every 500 steps; ~10 min on 2 cores).
"""

from jaxsynth.tasks.gan import base_gan_config, phantom64_overrides, smoke_overrides


def get_config(arg=None):
    c = base_gan_config()
    c.task = "dcgan"
    c.num_steps = 5000
    c.checkpoint_every = 500
    if arg == "smoke":
        return smoke_overrides(c)
    if arg == "paper":
        c.image_size = 128
        c.batch_size = 32
        c.num_steps = 9375
        c.gan.ema_decay = 0.999
        return c
    if arg == "phantom64":
        return phantom64_overrides(c)
    if arg is not None:
        raise ValueError(f"unknown variant '{arg}' (smoke | paper | phantom64)")
    return c
