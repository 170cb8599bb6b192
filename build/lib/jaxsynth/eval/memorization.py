"""Memorisation ("fingerprint") check of synthetic images against the generator's training set.

Paper 001 asks that synthetic images carry no fingerprints of training images. Operational
test: a synthetic image is suspicious if it is closer to some training image than real,
never-seen images usually are. The reference distances are those from a held-out real set to
its nearest training image; the threshold is their 1st percentile, so a genuinely new image
from the same distribution is flagged with probability ~1 %, and exact or near copies (which
sit far below any natural nearest-neighbour distance) always are. The check runs in a feature
space (semantic copies) and in pixel space (literal copies); an image flagged in either is
flagged. `filter_memorized` returns the indices to keep, so flagged images never reach training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxsynth.eval.prdc import pairwise_distances


def nearest(
    query: np.ndarray, reference: np.ndarray, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row: (distance to, index of) its nearest reference row (Euclidean)."""
    q = np.asarray(query, np.float64).reshape(len(query), -1)
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    dist = np.empty(len(q))
    idx = np.empty(len(q), np.int64)
    for s in range(0, len(q), chunk):
        d = pairwise_distances(q[s : s + chunk], r)
        i = d.argmin(axis=1)
        idx[s : s + chunk] = i
        # Exact distance for the winner (the Gram expansion loses digits near 0).
        dist[s : s + chunk] = np.linalg.norm(q[s : s + chunk] - r[i], axis=1)
    return dist, idx


def _space(fake, train, heldout, percentile: float, copy_ratio: float) -> dict:
    d_fake, i_fake = nearest(fake, train)
    d_fake_held, _ = nearest(fake, heldout)
    d_held, _ = nearest(heldout, train)
    threshold = float(np.percentile(d_held, percentile))
    # A copy is close to ITS training image, not merely close to the data: a blurry "average"
    # or mode-collapsed sample sits near everything, training and held-out images alike, and
    # would pass the distance threshold without being a copy of anything.
    ratio = d_fake / np.maximum(d_fake_held, 1e-12)
    return {
        "distance": d_fake,
        "nearest_train": i_fake,
        "distance_heldout": d_fake_held,
        "train_heldout_ratio": ratio,
        "threshold": threshold,
        "flagged": (d_fake < threshold) & (ratio < copy_ratio),
    }


def memorization_report(
    fake_features: np.ndarray,
    train_features: np.ndarray,
    heldout_features: np.ndarray,
    fake_pixels: np.ndarray | None = None,
    train_pixels: np.ndarray | None = None,
    heldout_pixels: np.ndarray | None = None,
    percentile: float = 1.0,
    copy_ratio: float = 0.8,
) -> dict:
    """Flag synthetic images closer to a training image than the `percentile`-th percentile of
    held-out-real -> train nearest-neighbour distances AND closer to that training image than
    `copy_ratio` × their distance to the nearest held-out image (a copy of a training image,
    not just a typical-looking image), in feature space and (if pixels are given) pixel space.
    Returns per-space details, `flagged` (bool (F,)) and `flagged_fraction`.
    """
    spaces = {
        "feature": _space(fake_features, train_features, heldout_features, percentile, copy_ratio)
    }
    if fake_pixels is not None:
        to_unit = lambda a: np.asarray(a, np.float64).reshape(len(a), -1) / 255.0
        spaces["pixel"] = _space(
            to_unit(fake_pixels),
            to_unit(train_pixels),
            to_unit(heldout_pixels),
            percentile,
            copy_ratio,
        )
    flagged = np.zeros(len(fake_features), bool)
    for s in spaces.values():
        flagged |= s["flagged"]
    return {
        "spaces": spaces,
        "flagged": flagged,
        "flagged_fraction": float(flagged.mean()) if len(flagged) else 0.0,
        "percentile": percentile,
        "copy_ratio": copy_ratio,
    }


def filter_memorized(report: dict) -> np.ndarray:
    """Indices of the synthetic images that were NOT flagged (the ones safe to use)."""
    return np.flatnonzero(~np.asarray(report["flagged"]))


def closest_pairs_grid(
    fake_images: np.ndarray,
    train_images: np.ndarray,
    report: dict,
    path: str | Path,
    num_pairs: int = 8,
    space: str = "feature",
) -> Path:
    """PNG of the `num_pairs` synthetic images closest to a training image (relative to the
    threshold): top row synthetic, bottom row its nearest training image; flagged pairs get a
    red frame."""
    from PIL import Image

    s = report["spaces"][space]
    score = s["distance"] / max(s["threshold"], 1e-12)
    order = np.argsort(score)[:num_pairs]
    h, w = fake_images.shape[1:3]
    pad = 4
    canvas = np.full((2 * (h + 2 * pad), len(order) * (w + 2 * pad), 3), 255, np.uint8)
    for col, i in enumerate(order):
        x0 = col * (w + 2 * pad)
        colour = (220, 0, 0) if report["flagged"][i] else (255, 255, 255)
        for row, img in enumerate((fake_images[i], train_images[s["nearest_train"][i]])):
            y0 = row * (h + 2 * pad)
            canvas[y0 : y0 + h + 2 * pad, x0 : x0 + w + 2 * pad] = colour
            canvas[y0 + pad : y0 + pad + h, x0 + pad : x0 + pad + w] = np.asarray(img, np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path
