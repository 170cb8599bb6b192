"""Precision, recall, density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity
metrics for generative models") from k-nearest-neighbour balls in feature space.

FID folds fidelity and diversity into one number; a generator that copies a few training
images (mode collapse) can score well. PRDC separates them: precision/density = how much of
the fake set lies on the real manifold, recall/coverage = how much of the real manifold the
fakes reach. The radius of each sample is the distance to its k-th nearest neighbour within
its own set (excluding itself).
"""

from __future__ import annotations

import numpy as np


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b)) in float64, clamped at 0 before the sqrt."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row."""
    d = pairwise_distances(x, x)
    # Column 0 of the sorted row is the point itself (distance 0).
    return np.partition(d, k, axis=1)[:, k]


def prdc(features_real: np.ndarray, features_fake: np.ndarray, k: int = 5) -> dict:
    """{"precision", "recall", "density", "coverage", "k"} as defined by Naeem et al. 2020."""
    real, fake = np.asarray(features_real), np.asarray(features_fake)
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"PRDC with k={k} needs more than {k} images per set")
    r_real = kth_neighbour_radius(real, k)
    r_fake = kth_neighbour_radius(fake, k)
    d_rf = pairwise_distances(real, fake)  # (R, F)
    inside_real = d_rf < r_real[:, None]  # fake j inside real i's ball
    precision = inside_real.any(axis=0).mean()
    recall = (d_rf < r_fake[None, :]).any(axis=1).mean()
    density = inside_real.sum(axis=0).mean() / k
    coverage = (d_rf.min(axis=1) < r_real).mean()
    return {
        "precision": float(precision),
        "recall": float(recall),
        "density": float(density),
        "coverage": float(coverage),
        "k": int(k),
    }
