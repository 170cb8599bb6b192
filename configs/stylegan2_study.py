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

import importlib.util
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"jaxsynth_config_{name}", _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    if arg not in (None, "smoke", "paper"):
        raise ValueError(f"unknown variant '{arg}' (smoke | paper)")
    study = _load("rare_tumour")
    c = study.get_config(arg)
    quiet = ("train.sample_every=250", "train.log_every=50", "ada.kimg=100.0")
    if arg == "smoke":
        c.image_size = 32
        c.gen.stylegan2 = study._gen("stylegan2:smoke", num_steps=4, batch_size=8)
    elif arg == "paper":
        c.gen.stylegan2 = study._gen("stylegan2:paper", num_steps=390625, batch_size=64)
    else:
        # 32 px, ~the DCGAN's wall time in the default study (see docs/stylegan2.md)
        r1_gamma = 0.0002 * 32**2 / 32
        c.gen.stylegan2 = study._gen(
            "stylegan2",
            num_steps=1000,
            batch_size=32,
            overrides=quiet + (f"stylegan.r1_gamma={r1_gamma}",),
        )
    c.generators = ("stylegan2",)
    return c
