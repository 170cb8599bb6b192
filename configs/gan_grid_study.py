"""Paper 001's GAN hyperparameter grid as a study.

    jaxsynth run --config configs/gan_grid_study.py --workdir runs/gan_grid

Every grid point of `configs/gan_grid.py` (learning rate × Adam β1 × β2 × latent size, 72 DCGANs)
becomes one generator of the rare-tumour study, named `grid_<NN>`: each is trained on the
training split only, sampled, memorisation-filtered and scored (SSIM, domain FID/KID, and the
classifier arms × seeds on the real-only test split), so the report ranks the grid by what
matters downstream, with CIs, not by the GAN loss. Everything is cached per point: a killed
grid resumes at the first unfinished point, and adding points reuses the finished ones.

Pick points with `--config.generators="('grid_00','grid_07')"` (all 72 by default).
Variants: default (the CPU-sized DCGAN of `configs/rare_tumour.py`, 32 px), `:smoke` (two
tiny points, for tests), `:paper` (128 px, paper-000 DCGAN length; a GPU/TPU host).
"""

import importlib.util
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"jaxsynth_config_{name}", _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def point_name(index: int) -> str:
    return f"grid_{index:02d}"


def get_config(arg=None):
    if arg not in (None, "smoke", "paper"):
        raise ValueError(f"unknown variant '{arg}' (smoke | paper)")
    study = _load("rare_tumour")
    grid = _load("gan_grid")
    c = study.get_config(arg)
    template = c.gen.dcgan
    size_variant = f"{arg}," if arg else ""
    names = []
    for i in range(len(grid.grid_points())):
        name = point_name(i)
        g = study._gen(
            f"gan_grid:{size_variant}i{i}",
            num_steps=template.num_steps,
            batch_size=template.batch_size,
            overrides=template.overrides,
        )
        c.gen[name] = g
        names.append(name)
    c.generators = tuple(names[:2]) if arg == "smoke" else tuple(names)
    c.classifier.synthetic_only_arms = False  # one augmented arm per point keeps the grid small
    return c
