"""Selective augmentation (HistoGAN, Xue et al. 2021, cited by Rane 2026): keep only the
synthetic tiles a real-trained classifier finds convincing.

A synthetic tumour tile is kept when
1. the original-arm classifier's P(tumour) is at least the `confidence_quantile` quantile of
   P(tumour) over the real *validation* tumour tiles, and
2. its distance to the centroid of the real *training* tumour tiles in the classifier's feature
   space is at most the `distance_quantile` quantile of the validation tumour tiles' distances.

So a kept tile is as confident and as typical as most real tumour tiles the classifier never
trained on. Both thresholds come from the validation split; the test split is never looked at,
and a test tile among the inputs (or a held-out tile among the synthetic / centroid tiles) is a
leakage error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxsynth.data.split import assert_no_leakage


def _test_only(manifest: dict) -> dict:
    """The split manifest with the validation entries removed: validation tiles are the one
    legitimate input of the thresholds, test tiles never are."""
    return {"splits": {"val": [], "test": manifest["splits"]["test"]}}


def select_synthetic(
    synthetic: np.ndarray,
    val_tumour: np.ndarray,
    train_tumour: np.ndarray,
    prob_fn: Callable[[np.ndarray], np.ndarray],
    feature_fn: Callable[[np.ndarray], np.ndarray],
    manifest: dict,
    confidence_quantile: float,
    distance_quantile: float,
) -> dict:
    """Indices of the synthetic tiles to keep and the thresholds used.

    `prob_fn`/`feature_fn` map uint8 NHWC tiles to P(tumour) (N,) / features (N, D) of the
    original-arm classifier; `manifest` is the study split's manifest (leakage check)."""
    assert_no_leakage(manifest, synthetic, "selective filter's synthetic tiles")
    assert_no_leakage(manifest, train_tumour, "selective filter's centroid tiles")
    assert_no_leakage(_test_only(manifest), val_tumour, "selective filter's threshold tiles")
    if len(val_tumour) == 0:
        raise ValueError("selective filter: no validation tumour tiles to set thresholds on")
    centroid = np.asarray(feature_fn(train_tumour), np.float64).mean(0)

    def dist(x):
        return np.linalg.norm(np.asarray(feature_fn(x), np.float64) - centroid, axis=1)

    conf_thr = float(np.quantile(prob_fn(val_tumour), confidence_quantile))
    dist_thr = float(np.quantile(dist(val_tumour), distance_quantile))
    conf, d = np.asarray(prob_fn(synthetic)), dist(synthetic)
    keep = np.flatnonzero((conf >= conf_thr) & (d <= dist_thr))
    return {
        "keep": keep,
        "confidence_threshold": conf_thr,
        "distance_threshold": dist_thr,
        "kept": int(len(keep)),
        "offered": int(len(synthetic)),
        "kept_by_confidence": int((conf >= conf_thr).sum()),
        "kept_by_distance": int((d <= dist_thr).sum()),
    }
