"""DDPM U-Net (paper 002): per-class, class-conditional with guidance, or mask-guided synthesis.

`ddpm.conditioning` picks the variant:
  "none"  - one unconditional model per class (paper 002 variant 1): the model trains on
            `data.train_classes`, which must be the single class `ddpm.label`;
  "class" - one model for all classes, label embedding with label dropout, sampled with
            classifier-free guidance (`sampler.guidance`);
  "mask"  - the nuclei mask is concatenated to the noisy image at every step (paper 002
            variant 2); needs a source with masks (the phantom has them). Scored by mask IoU.

Variants: default (32 px, a CPU-trainable U-Net), `:smoke` (16 px, 8 channels, seconds),
`:paper` (128 px, batch 8, 300 epochs as in paper 002 table 1; the U-Net width/depth, T=1000 and
the optimiser are those of denoising-diffusion-pytorch, which the paper used; the paper states
only resolution, epochs and batch size), `:phantom` (the CPU quality check on the phantom:
32 px, narrow U-Net, 2,000 steps of batch 16). Modifiers after the variant, comma-separated:
`:smoke,class`, `:paper,mask`, `:smoke,label=normal`, `:class`. `:study32` is the DDPM as the
default rare-tumour study trains it (a 0.1 M-parameter two-level U-Net, 1,500 steps of batch 32,
20 DDIM steps).
"""

import ml_collections

from jaxsynth.config import Variants, base_config
from jaxsynth.train.defaults import engine_config

VARIANTS = Variants(
    ("smoke", "paper", "phantom", "study32"), modifiers=("none", "class", "mask", "label=<class>")
)


def get_config(arg=None):
    variant, mods = VARIANTS.parse(arg)
    c = base_config()
    c.task = "jaxsynth.tasks.ddpm:make_task"
    c.image_size = 32
    c.batch_size = 32
    c.num_steps = 20000
    c.checkpoint_every = 2000

    c.data.classes = ("normal", "tumour")
    c.data.train_classes = ("tumour",)
    c.data.split = ml_collections.ConfigDict()
    c.data.split.test = {"normal": 100, "tumour": 10}
    c.data.split.val = {"normal": 100, "tumour": 10}
    c.data.split.train = {"normal": 1000, "tumour": 100}
    c.data.augment = "flip_rot90"  # applied to image and mask alike

    c.model = ml_collections.ConfigDict()
    c.model.base_channels = 64
    c.model.channel_mults = (1, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (8,)  # feature-map sides with self-attention
    c.model.num_heads = 4
    c.model.dropout = 0.1
    c.model.num_classes = 0  # set to len(data.classes) below in "class" mode (engine reads it)

    c.ddpm = ml_collections.ConfigDict()
    c.ddpm.conditioning = "none"  # none | class | mask
    c.ddpm.label = "tumour"  # the class a per-class ("none") model is trained on
    c.ddpm.timesteps = 1000
    c.ddpm.schedule = "cosine"  # linear | cosine
    # v-prediction by default (eps still selectable): with eps the reverse chain's first steps
    # compute x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar) with sqrt(abar) down to 5e-5
    # (cosine, t = T-1), so a small eps error becomes a saturated, random per-image colour that
    # DDIM-50 carries into the sample (measured: docs/generator_quality.md).
    c.ddpm.prediction = "v"  # v | eps
    c.ddpm.loss_weighting = "none"  # none | min_snr
    c.ddpm.snr_gamma = 5.0
    c.ddpm.label_dropout = 0.1  # class mode: fraction of null labels (classifier-free guidance)
    c.ddpm.ema_decay = 0.9999

    c.sampler = ml_collections.ConfigDict()
    c.sampler.name = "ddim"  # ddim | ddpm
    c.sampler.steps = 50  # DDIM steps (DDPM always uses all timesteps)
    c.sampler.eta = 0.0
    c.sampler.guidance = 1.0  # classifier-free guidance scale (class mode); 1 = none
    c.sampler.clip_denoised = True

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 2e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.warmup_steps = 500
    c.optim.grad_clip = 1.0

    c.train = engine_config()
    c.train.sample_every = 2000
    c.train.ssim_every = 0  # SSIM of DDPM samples every few hundred steps is too costly on CPU

    if variant == "smoke":
        c.image_size = 16
        c.batch_size = 8
        c.num_steps = 6
        c.checkpoint_every = 3
        c.model.base_channels = 8
        c.model.channel_mults = (1, 2)
        c.model.num_res_blocks = 1
        c.model.attention_resolutions = (8,)
        c.model.num_heads = 2
        c.model.dropout = 0.0
        c.ddpm.timesteps = 50
        c.ddpm.ema_decay = 0.99
        c.sampler.steps = 5
        c.optim.lr = 1e-3
        c.optim.warmup_steps = 0
        c.data.split.test = {"normal": 4, "tumour": 4}
        c.data.split.val = {"normal": 4, "tumour": 4}
        c.data.split.train = {"normal": 16, "tumour": 16}
        c.train.log_every = 2
        c.train.sample_every = 3
        c.train.sample_grid = 4
        c.train.ssim_every = 0
    elif variant == "phantom":
        # The CPU quality check on the built-in phantom (class grid, FID, mask IoU), sized to
        # a few minutes on 2 cores (timings: docs/generator_quality.md): a
        # narrow two-level U-Net, batch 16, a high learning rate and a short EMA; 300 held-out
        # tiles per class (examples/ddpm_phantom_quality.py scores it).
        c.batch_size = 16
        c.num_steps = 2000
        c.checkpoint_every = 500
        c.model.base_channels = 16
        c.model.channel_mults = (1, 2)
        c.model.num_res_blocks = 1
        c.model.num_heads = 1
        c.model.dropout = 0.0
        c.ddpm.ema_decay = 0.995
        c.optim.lr = 1e-3
        c.optim.warmup_steps = 100
        c.sampler.steps = 50
        c.data.split.test = {"normal": 200, "tumour": 200}
        c.data.split.val = {"normal": 100, "tumour": 100}
        c.data.split.train = {"normal": 1000, "tumour": 100}
        c.train.sample_every = 500
        c.train.log_every = 100
    elif variant == "study32":
        c.batch_size = 32
        c.num_steps = 1500
        c.model.base_channels = 16
        c.model.channel_mults = (1, 2)
        c.model.num_res_blocks = 1
        c.model.attention_resolutions = (8,)
        c.model.num_heads = 1
        c.sampler.steps = 20
        c.train.sample_every = 0
        c.optim.lr = 5e-4
        c.optim.warmup_steps = 100
        c.ddpm.ema_decay = 0.999
        c.train.log_every = 50
    elif variant == "paper":
        c.image_size = 128
        c.batch_size = 8
        c.model.base_channels = 64
        c.model.channel_mults = (1, 2, 4, 8)
        c.model.attention_resolutions = (16,)
        c.model.dropout = 0.0
        c.ddpm.timesteps = 1000
        c.ddpm.ema_decay = 0.995
        c.optim.lr = 1e-4
        c.optim.warmup_steps = 0
        # 300 epochs over the training split at batch 8 (paper 002 table 1)
        c.num_steps = 300 * sum(c.data.split.train.values()) // 8
        c.checkpoint_every = 5000

    for mod in mods:
        if mod in ("none", "class", "mask"):
            c.ddpm.conditioning = mod
        else:  # label=<class> (VARIANTS.parse admits nothing else)
            c.ddpm.label = mod.split("=", 1)[1]
    if c.ddpm.conditioning == "none":
        c.data.train_classes = (c.ddpm.label,)
    else:
        c.data.train_classes = tuple(c.data.classes)
    if c.ddpm.conditioning == "class":
        c.model.num_classes = len(c.data.classes)
        c.sampler.guidance = 2.0
    return c
