"""The GAN hyperparameter grid of Andrei & Ionescu (GANs in medical imaging) as a study.

    jaxsynth run --config gan_grid_study --workdir runs/gan_grid

Every grid point of `configs/gan_grid.py` (learning rate × Adam β1 × β2 × latent size, 72 DCGANs)
becomes one generator of the rare-tumour study, named `grid_<NN>`: the study's DCGAN with that
point's values. Each is trained on the training split only, sampled, memorisation-filtered and
scored (SSIM, domain FID/KID, and the classifier arms × seeds on the real-only test split), so the
report ranks the grid by what matters downstream, with CIs, not by the GAN loss. Everything is
cached per point: a killed grid resumes at the first unfinished point, and adding points reuses
the finished ones.

Pick points with `--config.generators="('grid_00','grid_07')"` (all 72 by default).
Variants: default (the CPU-sized DCGAN of `configs/rare_tumour.py`, 32 px), `:smoke` (two
tiny points, for tests), `:paper` (128 px, Rane 2026's DCGAN length; a GPU/TPU host).
"""

import ml_collections
from jaxsynth.configs import gan_grid, rare_tumour

from jaxsynth.config import Variants

VARIANTS = Variants(("smoke", "paper"))


def point_name(index: int) -> str:
    return f"grid_{index:02d}"


def get_config(arg=None):
    variant, _ = VARIANTS.parse(arg)
    c = rare_tumour.get_config(variant)
    template = c.gen.dcgan
    names = []
    for i, point in enumerate(gan_grid.grid_points()):
        g = ml_collections.ConfigDict(template.to_dict())
        gan_grid.apply_point(g, point)
        g.grid_index = i
        c.gen[point_name(i)] = g
        names.append(point_name(i))
    c.generators = tuple(names[:2]) if variant == "smoke" else tuple(names)
    c.classifier.synthetic_only_arms = False  # one augmented arm per point keeps the grid small
    return c
