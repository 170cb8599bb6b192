"""PNG outputs of a run: sample grids, the SSIM-to-real curve, the loss curves (matplotlib Agg)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from jaxsynth.images import to_uint8  # noqa: F401  (re-exported: grids take uint8)


def make_grid(images_uint8: np.ndarray, pad: int = 2, cols: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows·(H+pad)+pad, cols·(W+pad)+pad, 3) uint8 mosaic, filled
    row by row; `cols` defaults to a square-ish layout."""
    n, h, w, c = images_uint8.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images_uint8):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def save_png(image_uint8: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_uint8).save(path)
    return path


def plot_curves(
    series: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str, ylabel: str
) -> Path:
    """One line per named series of (step, value) points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in sorted(series.items()):
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
