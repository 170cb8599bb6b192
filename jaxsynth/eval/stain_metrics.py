"""Stain statistics of H&E tiles, for scoring stain translation (CycleGAN) against paired truth.

Why: SSIM and PSNR say whether a translated tile matches its truth pixel by pixel, but not
whether it carries the right *stain*: a model can keep the structure and miss the colour. A
colour deconvolution (Ruifrok & Johnston 2001, `skimage.color.rgb2hed`) turns each tile into
haematoxylin, eosin and residual optical densities; their per-tile means are the stain
statistics, and the distance between a translated tile's and its truth's is the stain error.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2hed

CHANNELS = ("haematoxylin", "eosin", "dab")


def hed_means(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float64 (N, 3): mean H, E, D optical density of each tile."""
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) tiles, got {x.dtype} {x.shape}")
    return np.stack([rgb2hed(im.astype(np.float64) / 255.0).mean(axis=(0, 1)) for im in x])


def stain_distance(pred: np.ndarray, target: np.ndarray) -> dict:
    """Paired stain error of `pred` tiles vs their `target` truth (same order).

    Returns mean |Δ| of the per-tile H and E optical densities, their sum ("stain_l1"), and the
    signed set-level gaps of the means (positive: `pred` holds more of that stain).
    """
    p, t = hed_means(pred), hed_means(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in count: {len(p)} vs {len(t)}")
    out = {}
    for i, name in enumerate(CHANNELS[:2]):
        out[f"{name}_abs_error"] = float(np.mean(np.abs(p[:, i] - t[:, i])))
        out[f"{name}_mean_gap"] = float(p[:, i].mean() - t[:, i].mean())
    out["stain_l1"] = out["haematoxylin_abs_error"] + out["eosin_abs_error"]
    return out
