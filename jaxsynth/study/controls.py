"""Control arms a reviewer asks for: does a generator beat plain augmentation?

For every generator arm (real training split + k synthetic tumour tiles) two controls add the
same number k of tumour tiles made *without* a generator, from the real training tumour tiles
only (never a validation or test tile; checked):

* `<gen>_classical`: classical augmentation — each added tile is a real training tumour tile
  under a random dihedral transform (flips / 90° rotations), HED stain jitter (Tellez et al.:
  each haematoxylin/eosin/DAB concentration scaled by U(1−σ, 1+σ) and shifted by U(−b, b), via
  skimage's rgb2hed / hed2rgb), brightness/contrast jitter and, with some probability, a
  Gaussian blur;
* `<gen>_oversample`: the real training tumour tiles duplicated to the same count.

Source tiles are drawn round-robin from a shuffled order, so every real tile is used ⌊k/n⌋ or
⌈k/n⌉ times. In the arm's counts the added tiles count as "synthetic" (added, not real-new).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from jaxsynth.data.split import StudySplit, assert_no_leakage
from jaxsynth.study.arms import ArmData


def _sources(split: StudySplit, minority: int, count: int, rng: np.random.Generator):
    real = split.train.of_classes([minority]).images
    if len(real) == 0:
        raise ValueError("control arms need real training tiles of the minority class")
    assert_no_leakage(split, real, "control arm source tiles")
    order = np.concatenate([rng.permutation(len(real)) for _ in range(-(-count // len(real)))])
    return real[order[:count]]


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square tile (k in 0..7)."""
    out = np.rot90(image, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


def hed_jitter(images: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Scale (alpha) and shift (beta) each image's HED stain concentrations: (N, 3) each.

    rgb2hed clips negative concentrations, so hed2rgb(rgb2hed(x)) != x for colours outside the
    stain model; the jitter is therefore applied as a change, x + hed2rgb(jittered) −
    hed2rgb(unjittered), which is exactly x for alpha = 1, beta = 0."""
    from skimage.color import hed2rgb, rgb2hed

    x = images.astype(np.float64) / 255.0
    flat = x.reshape(-1, x.shape[2], 3)
    hed = rgb2hed(flat).reshape(x.shape)
    jittered = hed * alpha[:, None, None, :] + beta[:, None, None, :]
    change = hed2rgb(jittered.reshape(flat.shape)) - hed2rgb(hed.reshape(flat.shape))
    rgb = x + change.reshape(x.shape)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def classical_augment(tiles: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
    """One random classical augmentation per tile (uint8 NHWC in and out); `cfg` is the
    `study.classical` config group."""
    n = len(tiles)
    out = np.stack([dihedral(t, int(k)) for t, k in zip(tiles, rng.integers(0, 8, n))])
    alpha = rng.uniform(1 - cfg.hed_sigma, 1 + cfg.hed_sigma, (n, 3))
    beta = rng.uniform(-cfg.hed_bias, cfg.hed_bias, (n, 3))
    out = hed_jitter(out, alpha, beta).astype(np.float64)
    bright = rng.uniform(-cfg.brightness, cfg.brightness, (n, 1, 1, 1)) * 255.0
    contrast = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, (n, 1, 1, 1))
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * contrast + mean + bright
    for i in np.flatnonzero(rng.random(n) < cfg.blur_prob):
        sigma = rng.uniform(0.1, cfg.blur_sigma)
        out[i] = ndimage.gaussian_filter(out[i], sigma=(sigma, sigma, 0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _control_arm(split: StudySplit, name: str, added: np.ndarray, minority: int, gen: str):
    tr = split.train
    images = np.concatenate([tr.images, added])
    labels = np.concatenate([tr.labels, np.full(len(added), minority, np.int32)])
    is_added = np.r_[np.zeros(len(tr), bool), np.ones(len(added), bool)]
    arm = ArmData(name, images, labels.astype(np.int32), is_added, gen)
    assert_no_leakage(split, arm.images, f"control arm '{name}'")
    return arm


def classical_arm(
    split: StudySplit, gen: str, count: int, minority: int, rng: np.random.Generator, cfg
) -> ArmData:
    """Real training split + `count` classically augmented real tumour tiles."""
    added = classical_augment(_sources(split, minority, count, rng), rng, cfg)
    return _control_arm(split, f"{gen}_classical", added, minority, gen)


def oversample_arm(
    split: StudySplit, gen: str, count: int, minority: int, rng: np.random.Generator
) -> ArmData:
    """Real training split + `count` duplicates of real tumour tiles."""
    added = _sources(split, minority, count, rng)
    return _control_arm(split, f"{gen}_oversample", added, minority, gen)
