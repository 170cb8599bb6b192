"""SSIM, MS-SSIM and PSNR as batched, jitted JAX functions, plus the set-to-set modes.

Why re-implement instead of calling scikit-image: the papers compare thousands of synthetic
tiles against every real tile (paper 000: "each synthetic image vs the real set"), which is
millions of SSIMs; a Python loop over skimage takes hours. The definitions here are exactly
skimage's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=R, channel_axis=-1)` (11-tap Gaussian, scipy "reflect"
borders, 5-pixel border cropped before averaging, channels averaged) and
`peak_signal_noise_ratio(..., data_range=R)`, so numbers are comparable with everyone else's.

Images are (..., H, W, C) arrays in [0, data_range]. Inputs are rescaled to [0, 1] and the
local statistics are computed on mean-centred values, which keeps float32 within ~1e-6 of
skimage's float64 result.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

K1, K2 = 0.01, 0.03
SIGMA = 1.5
TRUNCATE = 3.5  # skimage's choice for gaussian_weights: 11 taps at sigma 1.5
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # 5
WIN_SIZE = 2 * RADIUS + 1  # 11

# Wang, Simoncelli & Bovik 2003, "Multi-scale structural similarity for image quality assessment".
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_taps() -> np.ndarray:
    x = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / SIGMA) ** 2)
    return (w / w.sum()).astype(np.float32)


@functools.cache
def _filter_matrix(n: int) -> np.ndarray:
    """(n, n) matrix M with (M @ v)[i] = sum_t taps[t] * v[reflect(i + t - RADIUS)]: the 11-tap
    Gaussian with scipy's 'reflect' (numpy 'symmetric') borders as one matmul."""
    taps = _gaussian_taps().astype(np.float64)
    m = np.zeros((n, n), np.float64)
    for i in range(n):
        for t in range(WIN_SIZE):
            k = i + t - RADIUS
            k = -k - 1 if k < 0 else (2 * n - k - 1 if k >= n else k)
            m[i, k] += taps[t]
    return m.astype(np.float32)


def _filter(x: jax.Array) -> jax.Array:
    """Separable Gaussian over H and W of (B, H, W, C), output the same size as the input.

    Written as two small matmuls with band matrices that fold in the reflected borders: on a
    CPU this is ~10x faster than a 1-channel convolution, and pairwise SSIM (paper 000's
    each-synthetic-vs-every-real) is dominated by this filter."""
    _, h, w, _ = x.shape
    hi = jax.lax.Precision.HIGHEST
    x = jnp.einsum("ik,bkwc->biwc", jnp.asarray(_filter_matrix(h)), x, precision=hi)
    return jnp.einsum("jk,bikc->bijc", jnp.asarray(_filter_matrix(w)), x, precision=hi)


def _bucket(n: int, cap: int) -> int:
    """Chunk size for n items: the next power of two (bounded by cap), so that sets of
    similar size share one compiled program."""
    return min(cap, 1 << max(0, (n - 1).bit_length()))


def _ssim_maps(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-pixel SSIM and contrast-structure maps of (B, H, W, C) images in [0, 1]."""
    c1, c2 = K1**2, K2**2
    # Centre each image on its own mean: the variance terms E[x^2]-E[x]^2 then lose no digits.
    mx = jnp.mean(x, axis=(1, 2), keepdims=True)
    my = jnp.mean(y, axis=(1, 2), keepdims=True)
    xc, yc = x - mx, y - my
    ux_c, uy_c = _filter(xc), _filter(yc)
    vx = _filter(xc * xc) - ux_c * ux_c
    vy = _filter(yc * yc) - uy_c * uy_c
    vxy = _filter(xc * yc) - ux_c * uy_c
    ux, uy = ux_c + mx, uy_c + my
    luminance = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1)
    cs = (2 * vxy + c2) / (vx + vy + c2)
    return luminance * cs, cs


def _crop_mean(m: jax.Array) -> jax.Array:
    """Mean over the interior (skimage crops (win_size-1)//2 pixels), then over channels."""
    r = (WIN_SIZE - 1) // 2
    return jnp.mean(m[:, r:-r, r:-r, :], axis=(1, 2, 3))


def _as_batch(x, data_range: float) -> np.ndarray:
    # numpy, not jnp: eager jnp ops outside jit compile once per shape (seconds on a busy CPU).
    x = np.asarray(x, np.float32) / np.float32(data_range)
    if x.ndim == 2:
        x = x[None, :, :, None]
    elif x.ndim == 3:
        x = x[None]
    return x


def _check_size(shape) -> None:
    if shape[-3] < WIN_SIZE or shape[-2] < WIN_SIZE:
        raise ValueError(f"SSIM needs images of at least {WIN_SIZE}x{WIN_SIZE}, got {shape}")


@jax.jit
def _ssim_unit(x: jax.Array, y: jax.Array) -> jax.Array:
    return _crop_mean(_ssim_maps(x, y)[0])


def ssim(x, y, data_range: float = 255.0) -> jax.Array:
    """SSIM of each pair: x, y (B, H, W, C) or (H, W, C) in [0, data_range] -> (B,) float32.

    Equals skimage's structural_similarity(x[i], y[i], gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=-1).
    """
    xb, yb = _as_batch(x, data_range), _as_batch(y, data_range)
    _check_size(xb.shape)
    xb, yb = np.broadcast_arrays(xb, yb)
    return _ssim_unit(xb, yb)


@jax.jit
def _psnr_unit(x: jax.Array, y: jax.Array) -> jax.Array:
    mse = jnp.mean((x - y) ** 2, axis=tuple(range(1, x.ndim)))
    return 10.0 * jnp.log10(1.0 / mse)


def psnr(x, y, data_range: float = 255.0) -> jax.Array:
    """PSNR in dB of each pair (B,), = skimage's peak_signal_noise_ratio(..., data_range).

    Identical images give +inf, as in skimage.
    """
    xb, yb = _as_batch(x, data_range), _as_batch(y, data_range)
    xb, yb = np.broadcast_arrays(xb, yb)
    return _psnr_unit(xb, yb)


def ms_ssim_num_scales(height: int, width: int, max_scales: int = 5) -> int:
    """How many of the 5 scales fit: the coarsest image must still hold an 11-px window."""
    n, s = 0, min(height, width)
    while n < max_scales and s >= WIN_SIZE:
        n += 1
        s //= 2
    return n


def ms_ssim_weights(num_scales: int) -> tuple[float, ...]:
    """Wang 2003 weights for the first `num_scales` scales, renormalised to sum to 1 (for tiny
    images that cannot be halved 4 times; callers report `num_scales`)."""
    w = np.asarray(MS_SSIM_WEIGHTS[:num_scales], np.float64)
    return tuple(float(v) for v in w / w.sum())


@functools.partial(jax.jit, static_argnames=("num_scales",))
def _ms_ssim_unit(x: jax.Array, y: jax.Array, num_scales: int) -> jax.Array:
    weights = jnp.asarray(ms_ssim_weights(num_scales), jnp.float32)
    out = jnp.ones(x.shape[0], jnp.float32)
    for s in range(num_scales):
        ssim_map, cs_map = _ssim_maps(x, y)
        last = s == num_scales - 1
        value = _crop_mean(ssim_map if last else cs_map)
        # Negative contrast-structure would make a fractional power NaN; clamp as TF does.
        out = out * jnp.maximum(value, 0.0) ** weights[s]
        if not last:
            h, w = (x.shape[1] // 2) * 2, (x.shape[2] // 2) * 2
            x = _halve(x[:, :h, :w])
            y = _halve(y[:, :h, :w])
    return out


def _halve(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim(x, y, data_range: float = 255.0, num_scales: int | None = None) -> jax.Array:
    """Multi-scale SSIM (Wang 2003) of each pair, (B,).

    Scale s > 0 is the previous one 2x2-average-pooled (odd edges dropped). Scales 1..n-1
    contribute their mean contrast-structure term, the last one the full SSIM, each raised to
    its Wang weight. `num_scales=None` uses as many of the 5 scales as the image size allows
    (`ms_ssim_num_scales`); the weights are then renormalised to sum to 1.
    """
    xb, yb = _as_batch(x, data_range), _as_batch(y, data_range)
    _check_size(xb.shape)
    xb, yb = np.broadcast_arrays(xb, yb)
    n = num_scales or ms_ssim_num_scales(xb.shape[1], xb.shape[2])
    return _ms_ssim_unit(xb, yb, n)


# float32 values per block of pairs in `ssim_matrix` (64 MB): bounds memory for big sets.
PAIR_BLOCK_FLOATS = 16 << 20


@jax.jit
def _moments(x: jax.Array) -> tuple[jax.Array, ...]:
    """Per-image pieces of SSIM that do not depend on the other image: the image centred on
    its mean, the mean, the filtered centred image and the local variance."""
    m = jnp.mean(x, axis=(1, 2), keepdims=True)
    xc = x - m
    uc = _filter(xc)
    return xc, m, uc, _filter(xc * xc) - uc * uc


@jax.jit
def _ssim_cross(a: tuple[jax.Array, ...], b: tuple[jax.Array, ...]) -> jax.Array:
    """SSIM of every pair (i in a, j in b) from `_moments`: (A, B). Only the covariance needs
    a filter per pair; the same arithmetic as `_ssim_maps`."""
    c1, c2 = K1**2, K2**2
    xc, mx, ux_c, vx = (t[:, None] for t in a)
    yc, my, uy_c, vy = (t[None] for t in b)
    prod = xc * yc
    shape = prod.shape
    vxy = _filter(prod.reshape(-1, *shape[2:])).reshape(shape) - ux_c * uy_c
    ux, uy = ux_c + mx, uy_c + my
    ssim_map = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1) * (2 * vxy + c2) / (vx + vy + c2)
    r = (WIN_SIZE - 1) // 2
    return jnp.mean(ssim_map[:, :, r:-r, r:-r, :], axis=(2, 3, 4))


def _padded_moments(x: np.ndarray, rows: int) -> tuple[jax.Array, ...]:
    pad = rows - len(x)
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    return _moments(x)


def ssim_matrix(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """M[i, j] = SSIM(a[i], b[j]) for two sets of (N, H, W, C) images, float64 (A, B).

    Per-image moments are computed once; blocks of pairs are padded to fixed shapes (powers of
    two, bounded to ~64 MB of float32 per block) so one compiled program serves the whole set.
    """
    a = np.asarray(a, np.float32) / np.float32(data_range)
    b = np.asarray(b, np.float32) / np.float32(data_range)
    _check_size(a.shape)
    pixels = int(np.prod(a.shape[1:]))
    pairs = max(1, PAIR_BLOCK_FLOATS // pixels)  # pairs per block
    rb = _bucket(len(b), max(1, pairs))
    ra = _bucket(len(a), max(1, pairs // rb))
    out = np.empty((len(a), len(b)), np.float64)
    b_blocks = [(j, _padded_moments(b[j : j + rb], rb)) for j in range(0, len(b), rb)]
    for i in range(0, len(a), ra):
        ma = _padded_moments(a[i : i + ra], ra)
        na = min(ra, len(a) - i)
        for j, mb in b_blocks:
            nb = min(rb, len(b) - j)
            out[i : i + na, j : j + nb] = np.asarray(_ssim_cross(ma, mb))[:na, :nb]
    return out


def ssim_to_set(fake: np.ndarray, real: np.ndarray, data_range: float = 255.0) -> dict:
    """Paper 000's measure: each synthetic image vs every real image.

    Returns per-fake mean and max SSIM over the real set, and their averages:
    {"mean": mean over fakes of the mean SSIM, "max": mean over fakes of the max SSIM,
    "per_image_mean": (F,), "per_image_max": (F,), "argmax": (F,) index of the closest real}.
    """
    m = ssim_matrix(fake, real, data_range)
    return {
        "mean": float(m.mean()),
        "max": float(m.max(axis=1).mean()),
        "per_image_mean": m.mean(axis=1),
        "per_image_max": m.max(axis=1),
        "argmax": m.argmax(axis=1),
    }


def ms_ssim_diversity(
    images: np.ndarray,
    data_range: float = 255.0,
    max_pairs: int = 2000,
    seed: int = 0,
    chunk: int = 128,
) -> dict:
    """Mean pairwise MS-SSIM within one set (lower = more diverse; a collapsed generator -> 1).

    All unordered pairs i < j if there are at most `max_pairs`, else `max_pairs` pairs drawn
    with `seed`. Returns {"mean", "std", "num_pairs", "num_scales"}.
    """
    x = np.asarray(images, np.float32) / data_range
    _check_size(x.shape)
    n = len(x)
    if n < 2:
        raise ValueError("diversity needs at least 2 images")
    iu, ju = np.triu_indices(n, k=1)
    if len(iu) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(iu), max_pairs, replace=False)
        iu, ju = iu[pick], ju[pick]
    scales = ms_ssim_num_scales(x.shape[1], x.shape[2])
    vals = []
    chunk = _bucket(len(iu), chunk)
    for start in range(0, len(iu), chunk):
        a, b = iu[start : start + chunk], ju[start : start + chunk]
        k = len(a)
        if k < chunk:
            a = np.concatenate([a, np.zeros(chunk - k, int)])
            b = np.concatenate([b, np.zeros(chunk - k, int)])
        vals.append(np.asarray(_ms_ssim_unit(x[a], x[b], scales))[:k])
    v = np.concatenate(vals).astype(np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "num_pairs": int(len(v)),
        "num_scales": scales,
    }


def psnr_to_set(fake: np.ndarray, real: np.ndarray, data_range: float = 255.0) -> dict:
    """PSNR of each synthetic image against its nearest (lowest-MSE) real image.

    Unpaired generators have no ground-truth partner, so the closest real image is the only
    meaningful reference; returns {"mean", "per_image": (F,), "argmin": (F,)}.
    """
    a = np.asarray(fake, np.float64).reshape(len(fake), -1) / data_range
    b = np.asarray(real, np.float64).reshape(len(real), -1) / data_range
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    mse = np.maximum(d2, 0.0) / a.shape[1]
    best = mse.argmin(axis=1)
    # Recompute the chosen pair exactly (the expansion above loses digits for near-copies).
    exact = ((a - b[best]) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        p = 10.0 * np.log10(1.0 / exact)
    finite = p[np.isfinite(p)]
    return {
        "mean": float(finite.mean()) if len(finite) else math.inf,
        "per_image": p,
        "argmin": best,
    }
