"""The rare-tumour study with StyleGAN2-ADA as a generator (`jaxsynth run`).

    jaxsynth run --config configs/stylegan2_study.py --workdir runs/rare_tumour

Starts from `configs/rare_tumour.py` (same split, classifier arms, seeds, memorisation filter and
scores) and adds generator `stylegan2` (`configs/stylegan2.py`, CPU-narrow, trained on the 80 real
tumour tiles of the training split). By default only `stylegan2` runs; in the rare-tumour
workdir the other generators' cached stages are reused, so
`--config.generators="('dcgan','cgan','ddpm','stylegan2')"` reports all side by side.
Variants: default (32 px), `:smoke` (tiny, 32 px: StyleGAN2 needs ≥ 32 px), `:paper` (the
study's 128 px with the paper256 generator settings; a GPU/TPU host).
"""

from jaxsynth.configs import rare_tumour, stylegan2

from jaxsynth.config import Variants
from jaxsynth.study.generators import study_generator

VARIANTS = Variants(("smoke", "paper"))


def get_config(arg=None):
    variant, _ = VARIANTS.parse(arg)
    c = rare_tumour.get_config(variant)
    if variant == "smoke":
        c.image_size = 32
        g = stylegan2.get_config("smoke")
        g.num_steps, g.batch_size = 4, 8
    elif variant == "paper":
        g = stylegan2.get_config("paper")
        g.num_steps, g.batch_size = 390625, 64
    else:
        # 32 px, ~the DCGAN's wall time in the default study (see docs/stylegan2.md)
        g = stylegan2.get_config()
        g.num_steps, g.batch_size = 1000, 32
        g.train.sample_every = 250
        g.train.log_every = 50
        g.ada.kimg = 100.0
        g.stylegan.r1_gamma = 0.0002 * 32**2 / 32
    c.gen.stylegan2 = study_generator(g)
    c.generators = ("stylegan2",)
    return c
