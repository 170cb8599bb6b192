"""Conditional GAN (Andrei & Ionescu, cGAN lymphocytes): 1,500-d latent + label, 5 transposed
convs of 128 filters.

G: [z ‖ one-hot(label)] -> dense -> 4×4×128 -> 5 × (ConvT 4×4 s2, 128 filters, LeakyReLU 0.2),
the last to RGB with tanh (128 px). D: 5 conv blocks (4×4 s2, LeakyReLU 0.2), label-conditioned
by projection. Batch 125, Adam 2e-4 β1 0.5, BCE. Trained on ALL classes, sampled for one.
The default variant is 64 px (4 stages); `:paper` is 128 px (5 stages, as in the paper);
`:phantom64` is the CPU quality check on the phantom (narrow, DiffAugment, FID curve);
`:study32` as the default study trains it (32 px, narrow, 128-d latent, 2,000 steps).
"""

from jaxsynth.configs import _gan

from jaxsynth.config import Variants

VARIANTS = Variants(("smoke", "paper", "phantom64", "study32"))


def get_config(arg=None):
    variant, _ = VARIANTS.parse(arg)
    c = _gan.base()
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
    c.gan.real_label = 1.0  # plain cross-entropy, as the paper
    c.num_steps = 5000
    if variant == "smoke":
        _gan.smoke(c)
        c.model.latent_dim = 32
    elif variant == "paper":
        c.image_size = 128
        c.batch_size = 125
        c.num_steps = 20000
    elif variant == "phantom64":
        _gan.phantom64(c)
    elif variant == "study32":
        _gan.study32(c)
        c.model.latent_dim = 128
    return c
