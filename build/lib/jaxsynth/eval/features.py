"""Pluggable feature extractors for FID / KID / PRDC / memorisation.

Distances between image sets need an embedding; which one is a choice the report must state:
* `InceptionExtractor`: pytorch-fid's Inception pool3 (the standard, comparable across papers);
  needs the user's local copy of pytorch-fid's weights.
* `DomainExtractor`: the penultimate layer of the project's own trained classifier ("domain
  FID"): available offline, and tuned to histology rather than ImageNet.
* `PixelExtractor`: downsampled raw pixels; a weights-free fallback (numbers are NOT FID and
  are labelled as such in every report).

Every extractor maps uint8 images (N, H, W, 3) to float64 features (N, D), runs in fixed-size
batches (one compilation), and has an `id` string that names it in caches and reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np


def _batched(
    fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int, log: bool
) -> np.ndarray:
    """Apply `fn` to fixed-size batches (the last one zero-padded), concatenating the outputs."""
    n = len(x)
    outs, t0 = [], time.time()
    for start in range(0, n, batch):
        chunk = x[start : start + batch]
        k = len(chunk)
        if k < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - k, *chunk.shape[1:]), chunk.dtype)])
        outs.append(np.asarray(fn(chunk), np.float64)[:k])
        if log and n > batch:
            done = start + k
            rate = done / max(time.time() - t0, 1e-9)
            print(
                f"  features {done}/{n} ({rate:.1f} img/s, ETA {(n - done) / rate:.0f}s)",
                flush=True,
            )
    return np.concatenate(outs) if outs else np.zeros((0, 0))


class InceptionExtractor:
    """pytorch-fid's FID Inception pool3 features (2048-d)."""

    def __init__(
        self,
        weights_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 32,
        variables: dict | None = None,
        log: bool = False,
    ):
        from jaxsynth.eval import inception

        if variables is None:
            if weights_path is None:
                raise ValueError("InceptionExtractor needs weights_path or variables")
            variables = inception.load_inception_params(weights_path, cache_dir)
        self._fn = inception.make_feature_fn(variables)
        self.batch_size = batch_size
        self.log = log
        self.dim = inception.FEATURE_DIM
        # Identify the weights by value so caches never mix networks.
        first = np.asarray(variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"]).ravel()[:8]
        self.id = "inception-pool3:" + ",".join(f"{v:.6g}" for v in first)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images)
        # Scale in numpy: an eager jnp op outside jit would compile once per shape.
        return _batched(
            lambda b: self._fn(b.astype(np.float32) / np.float32(255.0)),
            x,
            self.batch_size,
            self.log,
        )


class DomainExtractor:
    """Penultimate-layer features of a trained classifier.

    `apply_fn(images)` receives float32 images in [-1, 1] (the data pipeline's convention)
    of shape (B, H, W, 3) and returns (B, D) features; it is jitted here.
    """

    def __init__(self, apply_fn: Callable[[jax.Array], jax.Array], name: str, batch_size: int = 64):
        self._fn = jax.jit(apply_fn)
        self.batch_size = batch_size
        self.id = f"domain:{name}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        def run(b):
            return self._fn(b.astype(np.float32) / np.float32(127.5) - np.float32(1.0))

        return _batched(run, np.asarray(images), self.batch_size, False)


class PixelExtractor:
    """Raw pixels, area-downsampled to `size` x `size` and scaled to [0, 1] (fallback only)."""

    def __init__(self, size: int = 16):
        self.size = size
        self.id = f"pixels{size}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, np.float32) / 255.0
        n, h, w, c = x.shape
        if h % self.size == 0 and w % self.size == 0:
            x = x.reshape(n, self.size, h // self.size, self.size, w // self.size, c).mean(
                axis=(2, 4)
            )
        else:
            x = np.asarray(
                jax.image.resize(x, (n, self.size, self.size, c), "linear", antialias=True)
            )
        return x.reshape(n, -1).astype(np.float64)
