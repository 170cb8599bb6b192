"""Many classifiers trained at once: one compiled program over a leading model axis (vmap).

WHY: the study trains 24+ small classifiers (arms × seeds; a ratio sweep 63+), each a few
seconds of mostly Python dispatch: 10 epochs × ~28 steps of a tiny CNN per model. Stacking the
models' states on a leading axis and `jax.vmap`-ing `classify.train_step` over it turns M
trainings into the dispatches of one, and on an accelerator the M small steps fill the device.

Each model is exactly what `fit_classifier` would train for its (dataset, seed): the same init
and dropout keys, the same host-side epoch permutations (`np.random.default_rng(seed)`), the same
padded last batch with zero weights, its own class weights, its own number of steps per epoch
(datasets of different sizes: a model with fewer batches skips the extra steps with a masked,
state-preserving update, so Adam's step count and moments match), its own validation loss
curve and best epoch. Results equal the one-at-a-time path within float tolerance (vmap turns
convolutions into grouped ones; summation order may differ in the last bits).
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


def _unstack(tree: Any, m: int) -> list[Any]:
    host = jax.tree.map(np.asarray, jax.device_get(tree))
    return [jax.tree.map(lambda x, i=i: x[i], host) for i in range(m)]


@functools.cache
def _many_fns(model: nn.Module):
    """Jitted vmapped train/eval/select steps for one architecture (compiled once per shape)."""

    def one(state, data, idx, weight, active):
        batch = {
            "image": data["image"][idx].astype(jnp.float32) / 127.5 - 1.0,
            "label": data["label"][idx],
            "weight": weight,
        }
        new, metrics = single.train_step(state, batch)
        keep = lambda n, o: jnp.where(active, n, o)  # noqa: E731
        return jax.tree.map(keep, new, state), metrics["loss"]

    def train(states, data, idx, weight, active):
        return jax.vmap(one)(states, data, idx, weight, active)

    def evaluate(states, batch):
        return jax.vmap(single.eval_step, in_axes=(0, None))(states, batch)

    def select(better, new, old):
        pick = lambda n, o: jnp.where(better.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)  # noqa: E731
        return jax.tree.map(pick, new, old)

    def predict(variables, images):
        return jax.vmap(lambda v: jax.nn.sigmoid(model.apply(v, images, train=False)), in_axes=0)(
            variables
        )

    return (
        jax.jit(train, donate_argnums=0),
        jax.jit(evaluate),
        jax.jit(select, donate_argnums=2),
        jax.jit(predict),
    )


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    pad = np.zeros((n - len(a),) + a.shape[1:], a.dtype)
    return np.concatenate([a, pad]) if len(pad) else a


def _epoch_plan(n: int, batch_size: int, steps: int, order: np.ndarray, cw, labels):
    """(idx, weight, active) of one model's epoch, padded to `steps` batches."""
    idx = np.zeros((steps, batch_size), np.int32)
    weight = np.zeros((steps, batch_size), np.float32)
    active = np.zeros(steps, bool)
    for s, (chunk, valid) in enumerate(single._padded_batches(n, batch_size, order)):
        idx[s] = chunk
        weight[s] = cw[labels[chunk]] * valid
        active[s] = True
    return idx, weight, active


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
    strategy: str = "auto",
) -> list[tuple[Any, dict[str, Any]]]:
    """`fit_classifier` for every (datasets[i], seeds[i]) pair, all models trained together.

    `datasets[i]` is (uint8 images NHWC, labels); every dataset has the same image shape.
    Returns one `(best-val-loss variables, history)` per pair, in order, as `fit_classifier`
    would for that dataset and seed. `strategy`: "vmap" (one program over a model axis),
    "sequential" (`fit_classifier` per pair), or "auto": vmap on GPU/TPU, sequential on CPU,
    where XLA runs the vmapped (grouped) convolutions slower than M separate ones (measured
    1.8x slower for 4 paper CNNs at 32 px, batch 32, docs/speed.md)."""
    if len(datasets) != len(seeds):
        raise ValueError(f"{len(datasets)} datasets but {len(seeds)} seeds")
    if not datasets:
        return []
    if strategy not in ("auto", "vmap", "sequential"):
        raise ValueError(f"strategy='{strategy}': expected auto, vmap or sequential")
    if strategy == "sequential" or (strategy == "auto" and jax.default_backend() == "cpu"):
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
    model = single.canonical_model(model)
    m = len(datasets)
    shape = datasets[0][0].shape[1:]
    labels = [np.asarray(lb).astype(np.int32) for _, lb in datasets]
    for (images, _), lb in zip(datasets, labels, strict=True):
        if images.shape[1:] != shape or len(images) != len(lb):
            raise ValueError("datasets differ in image shape, or images and labels in length")
    val_labels = np.asarray(val_labels).astype(np.int32)
    cws = [
        single.balanced_class_weights(lb) if class_weights else np.ones(2, np.float32)
        for lb in labels
    ]
    sizes = [len(lb) for lb in labels]
    n_max = max(sizes)
    steps = max(-(-n // batch_size) for n in sizes)
    data = {
        "image": jnp.asarray(np.stack([_pad_rows(im, n_max) for im, _ in datasets])),
        "label": jnp.asarray(np.stack([_pad_rows(lb, n_max) for lb in labels])),
    }
    states = _stack([single.create_state(model, shape, lr=lr, seed=int(s)) for s in seeds])
    train_fn, eval_fn, select_fn, _ = _many_fns(model)
    rngs = [np.random.default_rng(int(s)) for s in seeds]
    val_batches = [
        {
            "image": single.to_unit_range(val_images[chunk]),
            "label": val_labels[chunk],
            "weight": valid.astype(np.float32),
        }
        for chunk, valid in single._padded_batches(len(val_images), 256)
    ]
    histories = [
        {"train_loss": [], "val_loss": [], "val_accuracy": [], "class_weights": cw.tolist()}
        for cw in cws
    ]
    best_loss = np.full(m, np.inf)
    best_epoch = np.full(m, -1)
    best = None
    for _ in range(epochs):
        plans = [
            _epoch_plan(
                sizes[i], batch_size, steps, rngs[i].permutation(sizes[i]), cws[i], labels[i]
            )
            for i in range(m)
        ]
        idx = np.stack([p[0] for p in plans], 1)  # (steps, M, B)
        weight = np.stack([p[1] for p in plans], 1)
        active = np.stack([p[2] for p in plans], 1)  # (steps, M)
        losses = []
        for s in range(steps):
            states, loss = train_fn(states, data, idx[s], weight[s], active[s])
            losses.append(loss)
        losses = np.asarray(jax.device_get(losses))  # (steps, M)
        totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        for batch in val_batches:
            out = jax.device_get(eval_fn(states, batch))
            for k in totals:
                totals[k] = totals[k] + np.asarray(out[k], np.float64)
        val_loss = totals["loss_sum"] / totals["count"]
        val_acc = totals["correct"] / totals["count"]
        epoch = len(histories[0]["train_loss"])
        for i in range(m):
            histories[i]["train_loss"].append(float(np.mean(losses[active[:, i], i])))
            histories[i]["val_loss"].append(float(val_loss[i]))
            histories[i]["val_accuracy"].append(float(val_acc[i]))
        better = val_loss < best_loss
        best_loss = np.where(better, val_loss, best_loss)
        best_epoch = np.where(better, epoch, best_epoch)
        variables = _variables(states)
        best = variables if best is None else select_fn(jnp.asarray(better), variables, best)
    for i in range(m):
        histories[i]["best_epoch"] = int(best_epoch[i])
    return list(zip(_unstack(best, m), histories, strict=True))


def _variables(states) -> dict:
    v = {"params": jax.tree.map(jnp.copy, states.params)}
    if states.batch_stats is not None:
        v["batch_stats"] = jax.tree.map(jnp.copy, states.batch_stats)
    return v


def predict_proba_many(
    weights: list[Any],
    images: np.ndarray,
    model: nn.Module | None = None,
    batch_size: int = 256,
    vmap: bool | None = None,
) -> np.ndarray:
    """Tumour probabilities float64 (M, N) of M same-architecture models on the same images
    (`predict_proba` for each, one vmapped program per batch)."""
    model = single.canonical_model(model)
    if not weights:
        return np.zeros((0, len(images)), np.float64)
    if vmap is None:  # auto, as in fit_classifiers: M plain programs are faster on CPU
        vmap = jax.default_backend() != "cpu"
    if not vmap:
        return np.stack([single.predict_proba(w, images, model, batch_size) for w in weights])
    stacked = _stack([single.as_variables(w) for w in weights])
    predict = _many_fns(model)[3]
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
