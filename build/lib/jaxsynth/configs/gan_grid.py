"""The GAN hyperparameter grid of Andrei & Ionescu (GANs in medical imaging, Table I): DCGANs.

Grid: learning rate {1e-4, 2e-4, 1e-3} (the paper lists 0.0001 twice), Adam β1 {0.5, 0.9},
β2 {0.9, 0.99, 0.999}, latent dimension {50, 100, 500, 1000}: 72 points. Each point is an ordinary
DCGAN config; pick one with the argument, `i<N>` (0..71), optionally after the size variant:

    jaxsynth train --config configs/gan_grid.py:i7 --workdir runs/grid/007
    jaxsynth train --config configs/gan_grid.py:smoke,i7 --workdir /tmp/grid7
    python configs/gan_grid.py [smoke|paper]     # prints the 72 commands (one per line)

`:smoke` / `:paper` alone select point 0. `grid_points()` lists the points as override dicts.
"""

import itertools
import sys

from jaxsynth.configs import _gan

from jaxsynth.config import Variants

LEARNING_RATES = (1e-4, 2e-4, 1e-3)
BETA1 = (0.5, 0.9)
BETA2 = (0.9, 0.99, 0.999)
LATENT_DIMS = (50, 100, 500, 1000)
VARIANTS = Variants(("smoke", "paper"), modifiers=("i<N>",))


def grid_points() -> list[dict]:
    """The 72 grid points, in a fixed order, as {config key: value} overrides."""
    return [
        {"optim.g_lr": lr, "optim.d_lr": lr, "optim.b1": b1, "optim.b2": b2, "model.latent_dim": z}
        for lr, b1, b2, z in itertools.product(LEARNING_RATES, BETA1, BETA2, LATENT_DIMS)
    ]


def get_config(arg=None):
    variant, mods = VARIANTS.parse(arg)
    points = grid_points()
    if len(mods) > 1:
        raise ValueError(f"one grid index at most, got '{arg}'")
    try:
        index = int(mods[0][1:]) if mods else 0
    except ValueError:
        raise ValueError(f"grid index '{mods[0]}' must be i0..i{len(points) - 1}") from None
    if not 0 <= index < len(points):
        raise ValueError(f"grid index {index} out of range 0..{len(points) - 1}")
    c = _gan.base()
    c.task = "dcgan"
    c.num_steps = 5000
    c.grid_index = index
    if variant == "smoke":
        _gan.smoke(c)
    elif variant == "paper":
        c.image_size = 128
        c.batch_size = 32
        c.num_steps = 9375
    apply_point(c, points[index])
    return c


def apply_point(c, point: dict) -> None:
    """Set one grid point's values (`{"optim.g_lr": ..., ...}`) in a GAN config, in place."""
    for key, value in point.items():
        group, name = key.split(".")
        c[group][name] = value


if __name__ == "__main__":
    variant = sys.argv[1] + "," if len(sys.argv) > 1 else ""
    for i in range(len(grid_points())):
        print(
            f"jaxsynth train --config configs/gan_grid.py:{variant}i{i} "
            f"--workdir runs/gan_grid/{i:03d}"
        )
