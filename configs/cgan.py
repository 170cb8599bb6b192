"""Conditional GAN (paper 003): 1,500-d latent + label, 5 transposed convs of 128 filters.

G: [z ‖ one-hot(label)] -> dense -> 4×4×128 -> 5 × (ConvT 4×4 s2, 128 filters, LeakyReLU 0.2),
the last to RGB with tanh (128 px). D: 5 conv blocks (4×4 s2, LeakyReLU 0.2), label-conditioned
by projection. Batch 125, Adam 2e-4 β1 0.5, BCE. Trained on ALL classes, sampled for one.
The default variant is 64 px (4 stages); `:paper` is 128 px (5 stages, as in the paper);
`:phantom64` is the CPU quality check on the phantom (narrow, DiffAugment, FID curve).
"""

from jaxsynth.tasks.gan import base_gan_config, phantom64_overrides, smoke_overrides


def get_config(arg=None):
    c = base_gan_config()
    c.task = "cgan"
    c.data.train_classes = ("normal", "tumour")
    c.model.latent_dim = 1500
    c.model.num_classes = 2
    c.model.g_base_width = 128
    c.model.g_max_width = 128
    c.model.g_activation = "leaky_relu"
    c.model.g_norm = "none"
    c.model.d_base_width = 128
    c.model.d_max_width = 128
    c.model.d_dropout = 0.0
    c.gan.real_label = 1.0  # paper 003: plain cross-entropy
    c.num_steps = 5000
    if arg == "smoke":
        c = smoke_overrides(c)
        c.model.latent_dim = 32
        return c
    if arg == "paper":
        c.image_size = 128
        c.batch_size = 125
        c.num_steps = 20000
        return c
    if arg == "phantom64":
        return phantom64_overrides(c)
    if arg is not None:
        raise ValueError(f"unknown variant '{arg}' (smoke | paper | phantom64)")
    return c
