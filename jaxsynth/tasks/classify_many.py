"""The study's classifiers in bulk: many (dataset, seed) pairs trained, many models scored.

Every classifier trains through the one engine (`classify.fit_classifier` → `train()`), one
after another; the engine's compiled programs are shared between them (`ClassifierTask.cache_key`
and the padded record count of `jaxsynth.train.device_data`), so the 45 classifiers of the
default study compile their step once per training-set bucket, not once each. A member's model
depends only on its own dataset and seed, never on which other pairs share the call (what the
study's per-member cache relies on).

Training M members in one vmapped program (the accelerator path of the speed issue) needs the
engine to carry a member axis with per-member step budgets and validation epochs; until it does,
members train sequentially (on CPU this was also the faster way: grouped convolutions ran
slower than M separate ones, docs/speed.md).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsynth.tasks import classify as single


def _stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@functools.cache
def _predict_many(model: nn.Module):
    """One jitted, vmapped sigmoid(apply) per architecture (modules hash by their fields)."""
    return jax.jit(
        jax.vmap(lambda v, x: jax.nn.sigmoid(model.apply(v, x, train=False)), in_axes=(0, None))
    )


def fit_classifiers(
    datasets: list[tuple[np.ndarray, np.ndarray]],
    seeds: list[int],
    *,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    class_weights: bool = True,
    model: nn.Module | None = None,
) -> list[tuple[Any, dict[str, Any]]]:
    """`fit_classifier` for every (datasets[i], seeds[i]) pair, in order: one
    `(best-val-loss variables, history)` per pair. `datasets[i]` is (uint8 images NHWC,
    labels)."""
    if len(datasets) != len(seeds):
        raise ValueError(f"{len(datasets)} datasets but {len(seeds)} seeds")
    return [
        single.fit_classifier(
            images,
            labels,
            val_images=val_images,
            val_labels=val_labels,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=int(seed),
            class_weights=class_weights,
            model=model,
        )
        for (images, labels), seed in zip(datasets, seeds, strict=True)
    ]


def predict_proba_many(
    weights: list[Any],
    images: np.ndarray,
    model: nn.Module | None = None,
    batch_size: int = 256,
    vmap: bool | None = None,
) -> np.ndarray:
    """Tumour probabilities float64 (M, N) of M same-architecture models on the same images
    (`predict_proba` for each; with `vmap`, one vmapped program per batch: the default on
    GPU/TPU, where M small forward passes would leave the device idle)."""
    model = single.canonical_model(model)
    if not weights:
        return np.zeros((0, len(images)), np.float64)
    if vmap is None:
        vmap = jax.default_backend() != "cpu"
    if not vmap:
        return np.stack([single.predict_proba(w, images, model, batch_size) for w in weights])
    stacked = _stack([single.as_variables(w) for w in weights])
    predict = _predict_many(model)
    out = np.empty((len(weights), len(images)), np.float64)
    batch_size = min(batch_size, max(len(images), 1))
    for start, (chunk, valid) in zip(
        range(0, len(images), batch_size),
        single._padded_batches(len(images), batch_size),
        strict=True,
    ):
        probs = np.asarray(predict(stacked, single.to_unit_range(images[chunk])))
        out[:, start : start + valid.sum()] = probs[:, valid]
    return out
