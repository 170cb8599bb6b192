"""The synthetic-ratio sweep (Bohumel, and scaling studies): `jaxsynth sweep`.

Same data, generators and classifier as `configs/rare_tumour.py` (and the same stage cache when
run in the same workdir); adds the `sweep` group: the grid of synthetic shares of the minority
class and the design (`add`: real kept, synthetic added, as Bohumel; `replace`: minority
count fixed). Variants: default, `:smoke`, `:paper` (Bohumel's step-by-step additions up to
synthetic-only).
"""

import ml_collections
from jaxsynth.configs import rare_tumour

from jaxsynth.config import Variants

VARIANTS = Variants(("smoke", "paper"))


def get_config(arg=None):
    variant, _ = VARIANTS.parse(arg)
    c = rare_tumour.get_config(variant)
    c.sweep = ml_collections.ConfigDict()
    c.sweep.mode = "add"  # add | replace
    c.sweep.fractions = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)  # 1.0 = synthetic minority only
    c.synthetic.num = 800  # "add" at 90 % of 80 real tumours needs 720 synthetic images
    c.classifier.synthetic_only_arms = False  # the sweep's 1.0 point is the synthetic-only arm
    if variant == "smoke":
        c.sweep.fractions = (0.5, 1.0)
        c.synthetic.num = 32
    elif variant == "paper":
        c.sweep.fractions = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
        c.synthetic.num = 800
    return c
