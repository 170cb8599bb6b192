"""The synthetic-ratio sweep (paper 002, and scaling studies): `jaxsynth sweep`.

Same data, generators and classifier as `configs/rare_tumour.py` (and the same stage cache when
run in the same workdir); adds the `sweep` group: the grid of synthetic shares of the minority
class and the design (`add`: real kept, synthetic added, as paper 002; `replace`: minority
count fixed). Variants: default, `:smoke`, `:paper` (paper 002's step-by-step additions up to
synthetic-only, 5 seeds).
"""

import importlib.util
from pathlib import Path

import ml_collections


def _study_config(arg):
    path = Path(__file__).with_name("rare_tumour.py")
    spec = importlib.util.spec_from_file_location("jaxsynth_config_rare_tumour", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def get_config(arg=None):
    if arg not in (None, "smoke", "paper"):
        raise ValueError(f"unknown variant '{arg}' (smoke | paper)")
    c = _study_config(arg)
    c.sweep = ml_collections.ConfigDict()
    c.sweep.mode = "add"  # add | replace
    c.sweep.fractions = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)  # 1.0 = synthetic minority only
    c.synthetic.num = 800  # "add" at 90 % of 80 real tumours needs 720 synthetic images
    c.classifier.synthetic_only_arms = False  # the sweep's 1.0 point is the synthetic-only arm
    if arg == "smoke":
        c.sweep.fractions = (0.5, 1.0)
        c.synthetic.num = 32
    elif arg == "paper":
        c.sweep.fractions = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
        c.synthetic.num = 800
    return c
