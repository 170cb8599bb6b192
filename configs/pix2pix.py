"""pix2pix (paper 004's conditional GAN): nuclei mask (+ class label) -> H&E tile.

U-Net generator with skip connections and decoder dropout, conditional PatchGAN scaled to the
tile, adversarial (BCE) + 100·L1 (+ optional perceptual) loss, Adam 2e-4 β1 0.5 with a linear
decay over the second half of training (pix2pix's 100 + 100 epochs).

Variants: default (64 px on the phantom, narrow nets, ~10 min on 2 CPU cores), `:smoke` (16 px,
seconds), `:paper` (paper 004: 256 px, batch 8, 200 epochs of the 1,100-tile training split
= 27,500 steps, Adam 2e-4, U-Net of 8 downs, 70×70 PatchGAN, perceptual loss on; give
`--config.perceptual.vgg19_weights=/path/vgg19.pth` for VGG-19 features, else the random-CNN
fallback is used), `:phantom32` (the 32-px CPU quality check).
"""

import ml_collections

from jaxsynth.config import Variants, base_config
from jaxsynth.train.defaults import engine_config

VARIANTS = Variants(("smoke", "paper", "phantom32"))


def get_config(arg=None):
    arg, _ = VARIANTS.parse(arg)
    c = base_config()
    c.task = "jaxsynth.tasks.pix2pix:make_task"
    c.image_size = 64
    c.batch_size = 8
    c.num_steps = 3000
    c.checkpoint_every = 500

    c.data.classes = ("normal", "tumour")
    c.data.train_classes = ("normal", "tumour")  # one model, the class label is an input
    c.data.split = ml_collections.ConfigDict()
    c.data.split.test = {"normal": 100, "tumour": 100}
    c.data.split.val = {"normal": 50, "tumour": 50}
    c.data.split.train = {"normal": 1000, "tumour": 100}
    c.data.augment = "flip_rot90"  # applied to image and mask alike

    c.model = ml_collections.ConfigDict()
    c.model.generator = "unet"  # unet | resnet
    c.model.g_base_width = 32
    c.model.g_max_width = 256
    c.model.num_downs = 5  # U-Net: 64 px -> 2×2 bottleneck
    c.model.num_blocks = 6  # ResNet generator only
    c.model.dropout = 0.5
    c.model.num_dropout = 2  # decoder blocks next to the bottleneck with dropout
    c.model.norm = "instance"  # instance | none
    c.model.d_base_width = 32
    c.model.d_max_width = 256
    c.model.d_num_down = -1  # PatchGAN depth; -1: receptive field scaled to 70/256 of the tile
    c.model.num_classes = 2  # 0: mask only; 2: mask + class label

    c.pix2pix = ml_collections.ConfigDict()
    c.pix2pix.gan_loss = "bce"  # bce (pix2pix) | lsgan
    c.pix2pix.l1_weight = 100.0
    c.pix2pix.ema_decay = 0.999
    c.pix2pix.sample_dropout = False  # pix2pix keeps dropout on at test time; off: deterministic
    c.pix2pix.mask_bank = 64  # training masks kept in the state for sampling new layouts; 0: off

    c.perceptual = ml_collections.ConfigDict()
    c.perceptual.weight = 0.0  # paper 004 adds a VGG-19 perceptual loss (see :paper)
    c.perceptual.vgg19_weights = ""  # local torchvision vgg19 .pth; empty: random-CNN fallback

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    c.optim.decay_start = 0.5  # fraction of num_steps after which the lr decays linearly to 0

    c.train = engine_config()
    c.train.sample_every = 500
    c.train.sample_grid = 16
    c.train.ssim_every = 0
    c.train.log_every = 100

    if arg == "smoke":
        c.image_size = 16
        c.batch_size = 4
        c.num_steps = 4
        c.checkpoint_every = 2
        c.model.g_base_width = 8
        c.model.g_max_width = 16
        c.model.num_downs = 3
        c.model.d_base_width = 8
        c.model.d_max_width = 16
        c.data.split.test = {"normal": 4, "tumour": 4}
        c.data.split.val = {"normal": 4, "tumour": 4}
        c.data.split.train = {"normal": 8, "tumour": 8}
        c.train.log_every = 2
        c.train.sample_every = 2
        c.train.sample_grid = 4
        c.pix2pix.mask_bank = 6
        return c
    if arg == "paper":
        c.image_size = 256
        c.batch_size = 8
        c.num_steps = 27500  # 200 epochs × 1,100 training tiles / batch 8
        c.checkpoint_every = 2500
        c.model.g_base_width = 64
        c.model.g_max_width = 512
        c.model.num_downs = 8
        c.model.num_dropout = 3
        c.model.d_base_width = 64
        c.model.d_max_width = 512
        c.model.d_num_down = 3  # 70×70
        c.perceptual.weight = 10.0
        return c
    if arg == "phantom32":
        c.image_size = 32
        c.model.num_downs = 4
        return c
    return c
