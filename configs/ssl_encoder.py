"""Self-supervised (SimCLR-style) tile encoder: the offline feature space for FD / PRDC /
memorisation that sees tissue the tumour-vs-normal CNN ignores (docs/feature_spaces.md).

Trained only on the study's real TRAINING tiles (`jaxsynth.study.feature_spaces.ssl_encoder_for`
caches one per dataset). Variants: default (64 px, ~4 minutes on 2 CPU cores), `:smoke`
(16 px, a few steps, for tests of the plumbing), `:phantom` (the measured ranking check: 32 px).
"""

import ml_collections

from jaxsynth.config import Variants, base_config
from jaxsynth.train.defaults import engine_config

VARIANTS = Variants(("smoke", "phantom"))


def get_config(arg=None):
    arg, _ = VARIANTS.parse(arg)
    c = base_config()
    c.task = "jaxsynth.tasks.ssl:make_task"
    c.image_size = 64
    c.batch_size = 64
    c.num_steps = 600
    c.checkpoint_every = 300

    c.ssl = ml_collections.ConfigDict()
    c.ssl.widths = (32, 64, 96, 128)  # conv stage widths (features: 2 x the last)
    c.ssl.proj_dim = 64  # projection head output (the loss's space only)
    c.ssl.temperature = 0.2
    c.ssl.min_crop_area = 0.5  # random crops keep at least this fraction of the tile
    c.ssl.colour_jitter = 0.15  # per-channel gain / offset range (stain variation)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 2e-3
    c.optim.weight_decay = 1e-4

    c.train = engine_config()
    c.train.sample_every = 0
    c.train.ssim_every = 0
    c.train.log_every = 50

    if arg == "smoke":
        c.image_size = 16
        c.batch_size = 8
        c.num_steps = 4
        c.checkpoint_every = 4
        c.ssl.widths = (8, 16)
        c.ssl.proj_dim = 8
        c.train.log_every = 2
    elif arg == "phantom":
        c.image_size = 32
        c.batch_size = 64
        c.num_steps = 400
        c.checkpoint_every = 400
        c.ssl.widths = (16, 32, 64)
    return c
