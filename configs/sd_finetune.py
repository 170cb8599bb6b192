"""Stable Diffusion fine-tuning on histology tiles: full U-Net or LoRA (docs/sd_finetune.md).

`sd_ft.model_path` must point at a local SD folder (Flax `.msgpack`, or PyTorch `.safetensors` /
`.bin` read without torch). Variants: default (LoRA rank 4 at 256 px, batch 8, 2,000 steps:
SD v1.5 on one GPU), `:full` (every U-Net parameter, lr 1e-5), `:smoke` (the tiny test pipeline
at 32 px: seconds on a CPU), `:paper` (512 px, SD v1.5's native size, 5,000 steps). Modifiers
after the variant, comma-separated: `:smoke,full`, `:paper,full`, `:tumour` (train on the
tumour class only, as the study's `sd_ft` generator does).
"""

import ml_collections

from jaxsynth.config import Variants, base_config
from jaxsynth.train.defaults import engine_config

VARIANTS = Variants(("smoke", "paper"), modifiers=("full", "tumour"))


def get_config(arg=None):
    variant, mods = VARIANTS.parse(arg)
    c = base_config()
    c.task = "jaxsynth.sd.finetune:make_task"
    c.image_size = 256
    c.batch_size = 8
    c.num_steps = 2000
    c.checkpoint_every = 500

    c.data.classes = ("normal", "tumour")
    c.data.train_classes = ("normal", "tumour")
    c.data.split = ml_collections.ConfigDict()
    c.data.split.test = {"normal": 100, "tumour": 10}
    c.data.split.val = {"normal": 100, "tumour": 10}
    c.data.split.train = {"normal": 800, "tumour": 80}
    c.data.augment = "none"  # flips/rotations live in the latent cache (sd_ft.cache_flips)

    c.sd_ft = ml_collections.ConfigDict()
    c.sd_ft.model_path = ""  # local SD folder (required)
    c.sd_ft.mode = "lora"  # lora | full
    c.sd_ft.lora_rank = 4
    c.sd_ft.lora_alpha = 4.0  # adapter scale = alpha / rank
    c.sd_ft.lora_targets = ("to_q", "to_k", "to_v", "to_out_0")  # attention projections
    # One prompt per data.classes entry, same order; the empty prompt is the guidance "null".
    c.sd_ft.prompts = (
        "H&E histopathology tile, normal tissue",
        "H&E histopathology tile, metastatic tumour",
    )
    c.sd_ft.prompt_dropout = 0.1  # fraction of steps' examples trained with the empty prompt
    c.sd_ft.prediction = "eps"  # eps (SD v1.x's own) | v
    c.sd_ft.loss_weighting = "min_snr"  # none | min_snr
    c.sd_ft.snr_gamma = 5.0
    c.sd_ft.offset_noise = 0.0  # e.g. 0.05: per-channel constant added to the noise
    c.sd_ft.cache_latents = True  # encode the training tiles once (posterior mean and std)
    c.sd_ft.cache_flips = True  # ... in all 8 flips/rotations (histology has no orientation)
    c.sd_ft.remat = False  # recompute non-matmul activations in the backward pass
    c.sd_ft.ema_decay = 0.999
    # DreamBooth prior preservation (Ruiz et al. 2023; docs/sd_finetune.md "Prior preservation"):
    # before training, the base model samples num_class_images latents for prior_prompt; each
    # step pairs its batch with as many of them, loss = instance + prior_loss_weight * prior.
    c.sd_ft.prior_preservation = False
    c.sd_ft.prior_loss_weight = 1.0
    c.sd_ft.num_class_images = 200
    # The generic class the instance prompts refine (their shared stem): what the base model
    # means by an H&E tile is kept while "..., metastatic tumour" is learnt.
    c.sd_ft.prior_prompt = "H&E histopathology tile"
    c.sd_ft.prior_sampler_steps = 50  # DDIM steps per prior sample (base model, up front)
    c.sd_ft.prior_guidance = 7.5  # classifier-free guidance of the prior samples

    c.sampler = ml_collections.ConfigDict()
    c.sampler.steps = 20  # DDIM steps for the sample grids
    c.sampler.guidance = 7.5  # classifier-free guidance scale

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.weight_decay = 1e-2
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0

    c.train = engine_config()
    c.train.sample_every = 500
    c.train.sample_grid = 8
    c.train.ssim_every = 0
    c.train.log_every = 50

    if variant == "smoke":
        c.image_size = 32
        c.batch_size = 8
        c.num_steps = 6
        c.checkpoint_every = 3
        c.sd_ft.lora_rank = 2
        c.sd_ft.lora_alpha = 2.0
        c.sd_ft.ema_decay = 0.0
        c.sd_ft.num_class_images = 8
        c.sd_ft.prior_sampler_steps = 2
        c.sampler.steps = 4
        c.optim.lr = 1e-3
        c.optim.warmup_steps = 0
        c.data.split.test = {"normal": 4, "tumour": 4}
        c.data.split.val = {"normal": 4, "tumour": 4}
        c.data.split.train = {"normal": 16, "tumour": 16}
        c.train.log_every = 2
        c.train.sample_every = 0
        c.train.sample_grid = 4
    elif variant == "paper":
        c.image_size = 512
        c.num_steps = 5000
        c.sd_ft.remat = True
        c.train.compute_dtype = "bfloat16"

    for mod in mods:
        if mod == "full":
            c.sd_ft.mode = "full"
            if variant != "smoke":
                c.optim.lr = 1e-5  # the usual full fine-tuning rate (LoRA takes 1e-4)
        elif mod == "tumour":
            c.data.train_classes = ("tumour",)
    return c
