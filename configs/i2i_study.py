"""The rare-tumour study (`configs/rare_tumour.py`) with pix2pix as one more generator arm.

    jaxsynth run --config configs/i2i_study.py --workdir runs/i2i_study

pix2pix trains on the study's training split (both classes, masks + class label), and its
samples for the tumour arm are drawn on NEW layouts built from the tumour masks it saw in
training (four flipped/rotated quadrants of training-split tumour masks: tasks/mask_bank.py),
so no held-out mask is ever used; the study's memorisation filter and quality scores apply as
for every generator. Variants: default (32 px, CPU-sized), `:smoke` (16 px, seconds).
"""

import importlib.util
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"jaxsynth_config_{name}", _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    if arg not in (None, "smoke"):
        raise ValueError(f"unknown variant '{arg}' (smoke)")
    study = _load("rare_tumour")
    c = study.get_config(arg)
    if arg == "smoke":
        c.gen.pix2pix = study._gen("pix2pix:smoke", num_steps=4, batch_size=4)
    else:
        c.gen.pix2pix = study._gen(
            "pix2pix",
            num_steps=1500,
            batch_size=8,
            overrides=("model.num_downs=4", "train.sample_every=0", "pix2pix.mask_bank=80"),
        )
    c.generators = (*c.generators, "pix2pix")
    return c
