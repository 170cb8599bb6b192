"""Presets shared by the GAN configs (dcgan, cgan, wgan_gp, gan_grid): each key once, here.

`base()` declares every key the GAN task reads, with its default; the preset functions change a
few of them in place and return the config. Not a config itself (no `get_config`).
"""

import ml_collections

from jaxsynth.config import base_config
from jaxsynth.train.defaults import engine_config


def base() -> ml_collections.ConfigDict:
    """Every key of `jaxsynth.tasks.gan.GanTask`, with the DCGAN (paper 000) defaults."""
    c = base_config()
    c.task = "dcgan"
    c.data.classes = ("normal", "tumour")
    c.data.train_classes = ("tumour",)  # which classes the generator trains on
    c.data.split = ml_collections.ConfigDict()
    c.data.split.test = {"normal": 100, "tumour": 10}
    c.data.split.val = {"normal": 100, "tumour": 10}
    c.data.split.train = {"normal": 1000, "tumour": 100}
    c.data.augment = "none"
    c.model = ml_collections.ConfigDict()
    c.model.loss = "nonsaturating"  # nonsaturating (papers 000, 003) | wgan_gp (paper 004)
    c.model.latent_dim = 100
    c.model.num_classes = 0  # > 0: conditional G and projection D
    c.model.g_base_width = 64
    c.model.g_max_width = 512
    c.model.g_activation = "relu"
    c.model.g_norm = "batch"
    c.model.upsample_impl = "phase"  # phase | vjp | lax (see models/layers.py)
    c.model.d_base_width = 64
    c.model.d_max_width = 512
    c.model.d_norm = "none"
    c.model.d_dropout = 0.3
    c.model.d_penalty_conv_impl = "im2col"  # WGAN-GP penalty's critic convs: im2col | lax
    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"  # adam | rmsprop
    c.optim.g_lr = 2e-4
    c.optim.d_lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    c.gan = ml_collections.ConfigDict()
    c.gan.real_label = 0.9  # one-sided label smoothing (1.0 = off)
    c.gan.n_critic = 5  # WGAN-GP critic updates per step
    c.gan.gp_weight = 10.0
    c.gan.diffaugment = ""  # e.g. "color,translation,cutout"
    c.gan.ema_decay = 0.999
    c.train = engine_config()
    return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink a GAN config to something that trains in seconds on a CPU."""
    c.image_size = 16
    c.batch_size = 8
    c.num_steps = 6
    c.checkpoint_every = 3
    c.model.g_base_width = 8
    c.model.g_max_width = 16
    c.model.d_base_width = 8
    c.model.d_max_width = 16
    c.data.split.test = {"normal": 4, "tumour": 4}
    c.data.split.val = {"normal": 4, "tumour": 4}
    c.data.split.train = {"normal": 16, "tumour": 16}
    c.train.log_every = 2
    c.train.sample_every = 3
    c.train.sample_grid = 4
    c.train.ssim_every = 3
    c.train.ssim_samples = 8
    return c


def phantom64(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The CPU quality check on the built-in phantom (samples show tissue, FID falls): 64 px,
    narrow nets, DiffAugment, 3,000 steps of batch 32, and 300 held-out real tumour (and normal)
    tiles so the FID curve (`train.fid_every`) rests on enough images."""
    c.image_size = 64
    c.batch_size = 32
    c.num_steps = 3000
    c.checkpoint_every = 500
    c.model.g_base_width = 32
    c.model.g_max_width = 256
    c.model.d_base_width = 32
    c.model.d_max_width = 256
    c.gan.diffaugment = "color,translation,cutout"
    c.data.split.test = {"normal": 200, "tumour": 200}
    c.data.split.val = {"normal": 100, "tumour": 100}
    c.data.split.train = {"normal": 1000, "tumour": 100}
    c.train.sample_every = 500
    c.train.ssim_every = 0
    c.train.fid_every = 500
    c.train.fid_samples = 300
    c.train.log_every = 100
    return c


def study32(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The generator as the default rare-tumour study trains it on a 2-core CPU: 32 px, nets
    narrower than the papers', 2,000 steps of batch 32 (where the 32-px GANs start to draw nuclei
    on stroma; at 300 steps the DCGAN was mode-collapsed — docs/generator_quality.md)."""
    c.image_size = 32
    c.batch_size = 32
    c.num_steps = 2000
    c.model.g_base_width = 32
    c.model.g_max_width = 128
    c.model.d_base_width = 32
    c.model.d_max_width = 128
    c.train.sample_every = 100
    c.train.ssim_every = 100
    c.train.ssim_samples = 32
    c.train.log_every = 50
    return c
