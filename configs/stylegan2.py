"""StyleGAN2-ADA (Karras et al. 2020): the small-data GAN of paper 001's comparison.

Variants:
* default: 64 px, tumour tiles only, CPU-narrow nets (channel_base 4096, max 128).
* `:smoke`: 32 px, tiny nets, a few steps (tests).
* `:study32` / `:study64`: the phantom measurement on the 80-tumour-tile training split (the
  rare-tumour study's split) with 300 held-out real tumour tiles for the domain-FID curve; ADA's
  ramp is 100 kimg instead of the paper's 500 so that `p` can move within a ≤ 10-min CPU run
  (500 kimg = 15,600 steps of batch 32).
* `:paper`: stylegan2-ada-pytorch's "paper256" (256 px, batch 64, mbstd group 8, fmaps 0.5 ->
  channel_base 16384, max 512, lr 0.0025, γ = 1, EMA 20 kimg without ramp-up, 8 mapping layers,
  ADA bgc target 0.6 at 500 kimg, 25,000 kimg = 390,625 steps) — for a GPU/TPU host.
Add `--config.model.num_classes=2 --config.data.train_classes="('normal','tumour')"` for the
conditional (label-embedding) model.
"""

import ml_collections

from jaxsynth.config import Variants, base_config
from jaxsynth.train.defaults import engine_config


def _split(train, val, test):
    s = ml_collections.ConfigDict()
    for name, (n_normal, n_tumour) in (("train", train), ("val", val), ("test", test)):
        s[name] = ml_collections.ConfigDict({"normal": n_normal, "tumour": n_tumour})
    return s


VARIANTS = Variants(("smoke", "study32", "study64", "paper"))


def get_config(arg=None):
    arg, _ = VARIANTS.parse(arg)
    c = base_config()
    c.task = "jaxsynth.tasks.stylegan2:make_task"
    c.image_size = 64
    c.batch_size = 32
    c.num_steps = 3000
    c.checkpoint_every = 500
    c.data.classes = ("normal", "tumour")
    c.data.train_classes = ("tumour",)  # which classes the generator trains on
    c.data.split = _split(train=(1000, 100), val=(100, 10), test=(100, 10))
    c.data.augment = "none"  # loader augmentation; ADA below is the GAN's augmentation

    c.model = ml_collections.ConfigDict()
    c.model.z_dim = 128
    c.model.w_dim = 128
    c.model.num_classes = 0  # > 0: label embedding into G's mapping, projection D
    c.model.mapping_layers = 2  # stylegan2-ada "auto": 2; paper256: 8
    c.model.mapping_lr_mul = 0.01
    c.model.g_channel_base = 4096  # channels at resolution r: min(base / r, max)
    c.model.g_channel_max = 128
    c.model.d_channel_base = 4096
    c.model.d_channel_max = 128
    c.model.cmap_dim = 128  # conditional D's projection width (official: D's 4×4 channels)
    c.model.mbstd_group = 4
    c.model.mbstd_channels = 1

    c.optim = ml_collections.ConfigDict()
    c.optim.g_lr = 0.0025
    c.optim.d_lr = 0.0025
    c.optim.b1 = 0.0
    c.optim.b2 = 0.99
    c.optim.eps = 1e-8

    c.stylegan = ml_collections.ConfigDict()
    c.stylegan.r1_gamma = 0.0256  # "auto": 0.0002 · res² / batch
    c.stylegan.r1_interval = 16  # lazy R1: every 16 minibatches
    c.stylegan.pl_weight = 2.0
    c.stylegan.pl_interval = 4  # lazy path-length regularisation: every 4 minibatches
    c.stylegan.pl_batch_shrink = 2
    c.stylegan.pl_decay = 0.01
    c.stylegan.style_mixing = 0.9
    c.stylegan.ema_kimg = 10.0  # "auto": batch · 10 / 32
    c.stylegan.ema_rampup = 0.05  # 0 = no ramp-up
    c.stylegan.truncation_psi = 1.0  # sampling default; `jaxsynth sample --truncation`

    c.ada = ml_collections.ConfigDict()
    c.ada.augment = "bgc"  # blit, geometric, colour ("" = no augmentation)
    c.ada.target = 0.6  # r_t target; <= 0 keeps p at p_init
    c.ada.interval = 4  # adjust p every 4 minibatches
    c.ada.kimg = 500.0  # thousands of images for p to go 0 -> 1
    c.ada.p_init = 0.0

    c.train = engine_config()
    c.train.sample_every = 500
    c.train.ssim_every = 0
    c.train.log_every = 50

    if arg == "smoke":
        c.image_size = 32
        c.batch_size = 8
        c.num_steps = 6
        c.checkpoint_every = 3
        c.model.z_dim = c.model.w_dim = c.model.cmap_dim = 16
        c.model.mapping_layers = 2
        c.model.g_channel_base = c.model.d_channel_base = 256
        c.model.g_channel_max = c.model.d_channel_max = 16
        c.data.split = _split(train=(16, 16), val=(4, 4), test=(4, 4))
        # equal intervals: on CPU the engine compiles one program per regulariser phase, and
        # the smoke runs' compile time is most of their time (2 phases here, not 4)
        c.stylegan.r1_interval = 2
        c.stylegan.pl_interval = 2
        c.ada.interval = 2
        c.ada.kimg = 0.1
        c.train.log_every = 2
        c.train.sample_every = 3
        c.train.sample_grid = 4
        return c
    if arg in ("study32", "study64"):
        c.image_size = 32 if arg == "study32" else 64
        c.stylegan.r1_gamma = 0.0002 * c.image_size**2 / c.batch_size
        c.num_steps = 20000  # the runs are cut by wall time (≤ 10 min on 2 cores)
        c.checkpoint_every = 250
        c.data.split = _split(train=(800, 80), val=(100, 100), test=(200, 200))
        c.ada.kimg = 100.0
        c.train.sample_every = 250
        c.train.fid_every = 250
        c.train.fid_samples = 300
        c.train.log_every = 25
        return c
    if arg == "paper":
        c.image_size = 256
        c.batch_size = 64
        c.num_steps = 390625
        c.checkpoint_every = 5000
        c.model.z_dim = c.model.w_dim = c.model.cmap_dim = 512
        c.model.mapping_layers = 8
        c.model.g_channel_base = c.model.d_channel_base = 16384
        c.model.g_channel_max = c.model.d_channel_max = 512
        c.model.mbstd_group = 8
        c.stylegan.r1_gamma = 1.0
        c.stylegan.ema_kimg = 20.0
        c.stylegan.ema_rampup = 0.0
        c.train.sample_every = 5000
        return c
    return c
