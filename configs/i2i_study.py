"""The rare-tumour study (`configs/rare_tumour.py`) with pix2pix as one more generator arm.

    jaxsynth run --config configs/i2i_study.py --workdir runs/i2i_study

pix2pix trains on the study's training split (both classes, masks + class label), and its
samples for the tumour arm are drawn on NEW layouts built from the tumour masks it saw in
training (four flipped/rotated quadrants of training-split tumour masks: tasks/mask_bank.py),
so no held-out mask is ever used; the study's memorisation filter and quality scores apply as
for every generator. Variants: default (32 px, CPU-sized), `:smoke` (16 px, seconds).
"""

from jaxsynth.configs import pix2pix, rare_tumour

from jaxsynth.config import Variants
from jaxsynth.study.generators import study_generator

VARIANTS = Variants(("smoke",))


def get_config(arg=None):
    variant, _ = VARIANTS.parse(arg)
    c = rare_tumour.get_config(variant)
    if variant == "smoke":
        g = pix2pix.get_config("smoke")
        g.num_steps, g.batch_size = 4, 4
    else:
        g = pix2pix.get_config()
        g.num_steps, g.batch_size = 1500, 8
        g.model.num_downs = 4
        g.train.sample_every = 0
        g.pix2pix.mask_bank = 80
    c.gen.pix2pix = study_generator(g)
    c.generators = (*c.generators, "pix2pix")
    return c
