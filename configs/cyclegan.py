"""CycleGAN (paper 004's unpaired translation): phantom stain protocol A <-> protocol B.

Two generators, two PatchGANs, least-squares GAN + 10·cycle + 0.5·10·identity losses, a pool
of the last 50 fakes per domain, Adam 2e-4 β1 0.5 with the learning rate decayed linearly to 0
over the second half. Domain A is the run's training split (protocol A, the phantom's default);
domain B is different phantom tissue (seed `cyclegan.b_seed`) rendered with protocol B
(jaxsynth/data/stain.py) -- unpaired. Evaluation uses the held-out split's own protocol-B
renderings as paired truth (examples/i2i_phantom_quality.py).

Variants: default (64 px, small ResNet generators, ~10 min on 2 CPU cores), `:smoke` (16 px,
seconds), `:paper` (paper 004 table 2: ResNet-9 generators, 70×70 PatchGAN, Adam 2e-4, 180
epochs of the 1,100 training tiles at batch 1 as CycleGAN = 198,000 steps, 256 px), `:unet`
(U-Net generators instead of ResNet).
"""

import ml_collections

from jaxsynth.config import Variants, base_config
from jaxsynth.train.defaults import engine_config

VARIANTS = Variants(("smoke", "paper"), modifiers=("unet",))


def get_config(arg=None):
    variant, mods = VARIANTS.parse(arg)
    parts = ([variant] if variant else []) + mods
    c = base_config()
    c.task = "jaxsynth.tasks.cyclegan:make_task"
    c.image_size = 64
    c.batch_size = 4
    c.num_steps = 1500
    c.checkpoint_every = 500

    c.data.classes = ("normal", "tumour")
    c.data.train_classes = ("normal", "tumour")
    c.data.split = ml_collections.ConfigDict()
    c.data.split.test = {"normal": 100, "tumour": 100}
    c.data.split.val = {"normal": 50, "tumour": 50}
    c.data.split.train = {"normal": 1000, "tumour": 100}
    c.data.augment = "none"  # rows are A|B side by side: a flip would swap the domains
    c.data.phantom = ml_collections.ConfigDict()
    c.data.phantom.difficulty = 0.5  # the phantom's default; domain B uses the same

    c.model = ml_collections.ConfigDict()
    c.model.generator = "resnet"  # resnet (CycleGAN, paper 004) | unet
    c.model.g_base_width = 16
    c.model.g_max_width = 128  # U-Net only
    c.model.num_downs = 5  # U-Net only
    c.model.num_blocks = 3
    c.model.dropout = 0.0  # U-Net only; CycleGAN trains without dropout
    c.model.num_dropout = 0
    c.model.norm = "instance"
    c.model.d_base_width = 32
    c.model.d_max_width = 256
    c.model.d_num_down = -1  # -1: receptive field scaled to 70/256 of the tile

    c.cyclegan = ml_collections.ConfigDict()
    c.cyclegan.gan_loss = "lsgan"
    c.cyclegan.cycle_weight = 10.0
    c.cyclegan.identity_weight = 0.5  # × cycle_weight
    c.cyclegan.pool_size = 50
    c.cyclegan.ema_decay = 0.999
    c.cyclegan.b_protocol = "B"
    c.cyclegan.b_seed = 1_000_003  # phantom seed of the domain-B tissue (not the split's)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    c.optim.decay_start = 0.5

    c.train = engine_config()
    c.train.sample_every = 0  # CycleGAN has no unconditional sampler: grids come from the example
    c.train.ssim_every = 0
    c.train.log_every = 100

    for p in parts:
        if p == "smoke":
            c.image_size = 16
            c.batch_size = 2
            c.num_steps = 4
            c.checkpoint_every = 2
            c.model.g_base_width = 4
            c.model.g_max_width = 16
            c.model.num_downs = 3
            c.model.num_blocks = 1
            c.model.d_base_width = 8
            c.model.d_max_width = 16
            c.cyclegan.pool_size = 3
            c.data.split.test = {"normal": 4, "tumour": 4}
            c.data.split.val = {"normal": 4, "tumour": 4}
            c.data.split.train = {"normal": 8, "tumour": 8}
            c.train.log_every = 2
        elif p == "paper":
            c.image_size = 256
            c.batch_size = 1
            c.num_steps = 198_000  # 180 epochs × 1,100 tiles at batch 1
            c.checkpoint_every = 10_000
            c.model.g_base_width = 64
            c.model.num_blocks = 9
            c.model.d_base_width = 64
            c.model.d_max_width = 512
            c.model.d_num_down = 3
        elif p == "unet":
            c.model.generator = "unet"
    return c
