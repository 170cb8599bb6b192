"""Fréchet distance (FID) in float64 with pytorch-fid's numerical guards, and cached statistics.

`frechet_distance` is the same computation as pytorch-fid's `calculate_frechet_distance`
(`scipy.linalg.sqrtm` of sigma1 @ sigma2; if that is not finite, retry with eps on both
diagonals; drop a negligible imaginary part, fail on a large one) so that, given the same
features, the numbers agree to float64 rounding. Statistics are mean and `np.cov(rowvar=False)`
of float64 features, as there.

Real-set statistics are the expensive half of every FID, and a study compares many generators
against the same real set: `cached_statistics` stores (mu, sigma) under a key derived from the
image content and the feature extractor, so a changed image or extractor never reuses a stale
entry.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import linalg


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of (N, D) features in float64; sigma is the unbiased covariance."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), pytorch-fid's guarded version."""
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    s1, s2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(
            f"mismatched statistics: {mu1.shape} vs {mu2.shape}, {s1.shape} vs {s2.shape}"
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's singular-matrix / deprecation chatter
        covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets.

    With at least as many samples as dimensions this is exactly pytorch-fid's computation
    (`statistics` + `frechet_distance`). With fewer (the usual case for a few hundred rare-class
    tiles vs 2048-d Inception features) both covariances are rank-deficient, S1 S2 is singular,
    and `sqrtm` is slow (a minute for 2048 x 2048 on 2 cores) and only approximately right. Then
    the trace term is computed exactly from the centred features: with S1 = A^T A and S2 = B^T B,
    Tr sqrt(S1 S2) is the sum of the singular values of A B^T (an n_a x n_b matrix). Against
    pytorch-fid's sqrtm on the parity fixture the two agree to 2e-7 relative.
    """
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need (N >= 2, D) feature arrays of equal D, got {a.shape}, {b.shape}")
    if min(len(a), len(b)) - 1 >= a.shape[1]:
        return frechet_distance(*statistics(a), *statistics(b))
    return frechet_distance_lowrank(a, b)


def frechet_distance_lowrank(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Fréchet distance of the two sample Gaussians via the n_a x n_b cross-Gram matrix."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ca = (a - a.mean(0)) / np.sqrt(len(a) - 1)
    cb = (b - b.mean(0)) / np.sqrt(len(b) - 1)
    diff = a.mean(0) - b.mean(0)
    nuclear = np.linalg.svd(ca @ cb.T, compute_uv=False).sum()
    return float(diff.dot(diff) + (ca * ca).sum() + (cb * cb).sum() - 2.0 * nuclear)


def content_key(images: np.ndarray, extractor_id: str) -> str:
    """Hash of the exact pixels (shape, dtype, bytes) and of the extractor's identity."""
    h = hashlib.sha256()
    a = np.ascontiguousarray(images)
    h.update(f"{a.shape}|{a.dtype}|{extractor_id}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:24]


def _note_recompute(path: Path, why: str) -> None:
    """A damaged cache file is recomputed (and overwritten), never trusted or fatal."""
    print(f"note: cache {path} is damaged ({why[:160]}); recomputing", file=sys.stderr)


def cached_features(
    images: np.ndarray,
    extract: Callable[[np.ndarray], np.ndarray],
    extractor_id: str,
    cache_dir: str | Path | None,
) -> np.ndarray:
    """`extract(images)`, read from / written to `<cache_dir>/features_<key>.npy` (float32;
    no caching when cache_dir is None). Features, not only (mu, sigma), so that KID, PRDC and
    the low-rank FID can reuse them."""
    if cache_dir is None:
        return np.asarray(extract(images))
    path = Path(cache_dir) / f"features_{content_key(images, extractor_id)}.npy"
    if path.is_file():
        try:
            feats = np.load(path)
            if feats.ndim == 2 and len(feats) == len(images) and np.isfinite(feats).all():
                return feats
            why = f"shape {feats.shape} for {len(images)} images"
        except (OSError, ValueError, EOFError) as e:  # truncated / not an .npy
            why = f"{type(e).__name__}: {e}".splitlines()[0]
        _note_recompute(path, why)
    feats = np.asarray(extract(images), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    os.replace(tmp, path)
    return feats


def cached_statistics(
    images: np.ndarray,
    extract: Callable[[np.ndarray], np.ndarray],
    extractor_id: str,
    cache_dir: str | Path | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of `extract(images)`, read from / written to `<cache_dir>/fid_stats_<key>.npz`
    (no caching when cache_dir is None)."""
    if cache_dir is None:
        return statistics(extract(images))
    path = Path(cache_dir) / f"fid_stats_{content_key(images, extractor_id)}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                mu, sigma = z["mu"], z["sigma"]
            if mu.ndim == 1 and sigma.shape == (len(mu), len(mu)):
                return mu, sigma
            why = f"shapes {mu.shape}, {sigma.shape}"
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            why = f"{type(e).__name__}: {e}".splitlines()[0]
        _note_recompute(path, why)
    mu, sigma = statistics(extract(images))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma)
    os.replace(tmp, path)
    return mu, sigma
