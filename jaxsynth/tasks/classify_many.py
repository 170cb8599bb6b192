"""The study's classifiers in bulk: many (dataset, seed) pairs trained, many models scored.

Every classifier trains through the one engine. Off-CPU the members train together on the
engine's member axis (`jaxsynth.train.members`): M classifiers of one architecture in one
vmapped program, each with its own data, seed, class weights, step budget and validation
epochs, in groups of at most `max_members` (memory). On CPU they train one after another
(`classify.fit_classifier` → `train()`; grouped convolutions ran slower there than M separate
ones, docs/speed.md), sharing compiled programs (`ClassifierTask.cache_key` and the padded
record count of `jaxsynth.train.device_data`). Either way a member's model depends only on its
own dataset and seed, never on which other pairs share the call (what the study's per-member
cache relies on): the member path equals the sequential one up to float rounding.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsynth.tasks import classify as single
from jaxsynth.train.device_data import fixed_batches, padded_size


def _stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@functools.cache
def _predict_many(model: nn.Module):
    """One jitted, vmapped sigmoid(apply) per architecture (modules hash by their fields)."""
    return jax.jit(
        jax.vmap(lambda v, x: jax.nn.sigmoid(model.apply(v, x, train=False)), in_axes=(0, None))
    )


# members per member-axis call: a bound on device memory (M states, optimiser states and padded
# training sets), not a measured optimum (bench/members_bench.py times M = 1, 4, 16)
MAX_MEMBERS = 16


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
    vmap: bool | None = None,
    max_members: int = MAX_MEMBERS,
) -> list[tuple[Any, dict[str, Any]]]:
    """`fit_classifier` for every (datasets[i], seeds[i]) pair, in order: one
    `(best-val-loss variables, history)` per pair. `datasets[i]` is (uint8 images NHWC,
    labels). `vmap`: train the members stacked on the engine's member axis (`None`: off-CPU
    only); groups of at most `max_members`, of near-equal size."""
    if len(datasets) != len(seeds):
        raise ValueError(f"{len(datasets)} datasets but {len(seeds)} seeds")
    if vmap is None:
        vmap = jax.default_backend() != "cpu"
    kw = dict(epochs=epochs, batch_size=batch_size, lr=lr, class_weights=class_weights)
    if not vmap:
        return [
            single.fit_classifier(
                images,
                labels,
                val_images=val_images,
                val_labels=val_labels,
                seed=int(seed),
                model=model,
                **kw,
            )
            for (images, labels), seed in zip(datasets, seeds, strict=True)
        ]
    if not datasets:
        return []
    groups = -(-len(datasets) // max(1, int(max_members)))
    per = -(-len(datasets) // groups)
    # one padding for every group: groups of equal size share their compiled programs
    size = max(padded_size(len(images)) for images, _ in datasets)
    out: list[tuple[Any, dict[str, Any]]] = []
    for start in range(0, len(datasets), per):
        out += _fit_group(
            datasets[start : start + per],
            seeds[start : start + per],
            val_images=val_images,
            val_labels=val_labels,
            model=model,
            size=size,
            **kw,
        )
    return out


def _fit_group(
    datasets, seeds, *, val_images, val_labels, epochs, batch_size, lr, class_weights, model, size
) -> list[tuple[Any, dict[str, Any]]]:
    """One member-axis call: `fit_classifier`'s protocol (its task, class weights, step
    budget, per-epoch validation and history) for each pair."""
    from jaxsynth.train.members import Member, train_members

    model = single.canonical_model(model)
    val_labels = np.asarray(val_labels).astype(np.int32)
    if len(val_images) != len(val_labels):
        raise ValueError("images and labels differ in length")
    members, per_epoch, weights = [], [], []
    for (images, labels), seed in zip(datasets, seeds, strict=True):
        labels = np.asarray(labels).astype(np.int32)
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        cw = single.balanced_class_weights(labels) if class_weights else np.ones(2, np.float32)
        every = math.ceil(len(images) / batch_size)
        members.append(
            Member(
                arrays={"image": images, "label": labels, "weight": cw[labels]},
                seed=int(seed),
                num_steps=epochs * every,
                eval_every=every,
            )
        )
        per_epoch.append(every)
        weights.append(cw)
    config = single.run_config(
        image_size=int(datasets[0][0].shape[1]),
        batch_size=batch_size,
        num_steps=max(m.num_steps for m in members),
        lr=lr,
        seed=0,
        log_every=1,
    )
    task = single.ClassifierTask(config, net=model)  # fit_classifier's task (same cache_key)
    results = train_members(
        task,
        members,
        {"image": val_images, "label": val_labels},
        batch_size=batch_size,
        augment=config.data.get("augment", "none"),
        size=size,
    )
    out = []
    for r, every, cw in zip(results, per_epoch, weights, strict=True):
        losses = {h["step"]: h["loss"] for h in r.history}
        history = {
            "train_loss": [losses.get((e + 1) * every, float("nan")) for e in range(epochs)],
            "val_loss": [h["val_loss"] for h in r.history],
            "val_accuracy": [h["val_accuracy"] for h in r.history],
            "class_weights": cw.tolist(),
            "best_epoch": r.best_step // every - 1,
        }
        out.append((r.best, history))
    return out


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
    for chunk, valid in fixed_batches(len(images), batch_size):
        probs = np.asarray(predict(stacked, single.to_unit_range(images[chunk])))
        out[:, chunk[valid]] = probs[:, valid]
    return out
