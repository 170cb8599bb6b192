"""DCGAN (Rane 2026): 100-d noise -> tumour tiles; Adam 2e-4 β1 0.5, label smoothing, D dropout.

Variants: default (64 px, a few thousand steps on CPU), `:smoke` (16 px, seconds), `:paper`
(128 px; Rane 2026 trained 3,000 epochs on 100 tumour images; its batch size is not stated,
32 is assumed here, so 3,000 epochs ≈ 9,375 steps), `:phantom64` (the CPU quality check on the
phantom: 64 px, narrow nets, DiffAugment, FID curve every 500 steps), `:study32` (as the default
study trains it: 32 px, narrow nets, DiffAugment because it sees only 80 tiles, 2,000 steps).
"""

from jaxsynth.configs import _gan

from jaxsynth.config import Variants

VARIANTS = Variants(("smoke", "paper", "phantom64", "study32"))


def get_config(arg=None):
    variant, _ = VARIANTS.parse(arg)
    c = _gan.base()
    c.task = "dcgan"
    c.num_steps = 5000
    c.checkpoint_every = 500
    if variant == "smoke":
        _gan.smoke(c)
    elif variant == "paper":
        c.image_size = 128
        c.batch_size = 32
        c.num_steps = 9375
    elif variant == "phantom64":
        _gan.phantom64(c)
    elif variant == "study32":
        _gan.study32(c)
        c.gan.diffaugment = "color,translation,cutout"
    return c
