"""Training and scoring the paper-000 tumour classifier (real-only or augmented training sets).

The protocol follows paper 000: binary cross-entropy with "balanced" class weights (as sklearn's
`compute_class_weight("balanced")`: w_c = n / (2 n_c)), Adam, 10 epochs of batch 32, and the
weights of the epoch with the lowest validation loss kept (Keras `restore_best_weights`). The
decision threshold is then chosen on the validation split (max F1) -- never on the test split.

`train_step(state, batch)` is a pure function of a `ClassifierState` and a batch
`{"image": float32 NHWC in [-1, 1], "label": int32 (B,), "weight": float32 (B,)}`, so it can run
under the shared training engine as well as in `fit_classifier`'s small loop.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from jaxsynth.models.classifier import PaperCNN

DEFAULT_MODEL = PaperCNN()
_CANONICAL: dict[nn.Module, nn.Module] = {}


def canonical_model(model: nn.Module | None) -> nn.Module:
    """The first-seen instance equal to `model` (Flax modules compare by their fields).

    jit caches on the state's static `apply_fn` (a bound method, compared by its instance), so
    mapping equal modules to one object compiles the step once per architecture and image
    shape, not once per `fit_classifier` call.
    """
    model = DEFAULT_MODEL if model is None else model
    return _CANONICAL.setdefault(model, model)


class ClassifierState(train_state.TrainState):
    """TrainState plus the dropout key (folded with the step, so every step differs) and the
    BatchNorm running statistics (None for models without BatchNorm, e.g. `PaperCNN`)."""

    key: jax.Array = struct.field(default=None)
    batch_stats: Any = None

    def variables(self, params=None) -> dict:
        """The Flax variables dict for `apply` (`params` defaults to the state's)."""
        v = {"params": self.params if params is None else params}
        if self.batch_stats is not None:
            v["batch_stats"] = self.batch_stats
        return v


def as_variables(weights: Any) -> dict:
    """Accept either a Flax variables dict ({"params": ..., maybe "batch_stats": ...}) or a bare
    params tree (what older runs saved for `PaperCNN`) and return a variables dict."""
    if isinstance(weights, dict) and "params" in weights:
        return weights
    return {"params": weights}


def to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1] (the scaling every jaxsynth model expects)."""
    return images_uint8.astype(np.float32) / 127.5 - 1.0


def balanced_class_weights(labels: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """sklearn's "balanced" weights: n_samples / (n_classes * count_c); 0 for an absent class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    weights = np.zeros(num_classes, np.float64)
    present = counts > 0
    weights[present] = len(labels) / (num_classes * counts[present])
    return weights.astype(np.float32)


def weighted_bce(logits: jnp.ndarray, labels: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
    """sum_i w_i * BCE_i / sum_i [w_i > 0]: Keras' class-weighted mean (padding has w = 0)."""
    per_example = optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))
    n = jnp.maximum(jnp.sum(weight > 0), 1)
    return jnp.sum(per_example * weight) / n


@functools.cache
def _adam(lr: float) -> optax.GradientTransformation:
    """Cached: the optimiser is a static field of the state, so a new object would recompile."""
    return optax.adam(lr)


@functools.cache
def _init_fn(model: nn.Module, image_shape: tuple[int, ...]):
    return jax.jit(lambda k: model.init(k, jnp.zeros((1, *image_shape), jnp.float32)))


def create_state(
    model: nn.Module, image_shape: tuple[int, int, int], *, lr: float, seed: int
) -> ClassifierState:
    """Initialise params (from `seed`) and Adam; `image_shape` is (H, W, C)."""
    key = jax.random.key(seed)
    init_key, dropout_key = jax.random.split(key)
    variables = _init_fn(model, tuple(image_shape))(init_key)
    state = ClassifierState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=_adam(float(lr)),
        key=dropout_key,
        batch_stats=variables.get("batch_stats"),
    )
    # An int32 array step (not the Python 0 of `create`) keeps one compiled step per model.
    return state.replace(step=jnp.zeros((), jnp.int32))


def train_step(state: ClassifierState, batch: dict[str, jnp.ndarray]):
    """One Adam step on the class-weighted BCE; returns (new state, {"loss": ...})."""
    dropout_key = jax.random.fold_in(state.key, state.step)

    has_stats = state.batch_stats is not None

    def loss_fn(params):
        out = state.apply_fn(
            state.variables(params),
            batch["image"],
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"] if has_stats else False,
        )
        logits, updates = out if has_stats else (out, {})
        return weighted_bce(logits, batch["label"], batch["weight"]), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    if has_stats:
        state = state.replace(batch_stats=updates["batch_stats"])
    return state, {"loss": loss}


def eval_step(state: ClassifierState, batch: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """Sums over the (padded) batch: unweighted BCE (Keras' val_loss), correct count, count."""
    logits = state.apply_fn(state.variables(), batch["image"], train=False)
    valid = batch["weight"] > 0
    bce = optax.sigmoid_binary_cross_entropy(logits, batch["label"].astype(jnp.float32))
    correct = (logits > 0) == (batch["label"] > 0)
    return {
        "loss_sum": jnp.sum(jnp.where(valid, bce, 0.0)),
        "correct": jnp.sum(valid & correct),
        "count": jnp.sum(valid),
    }


_train_step_jit = jax.jit(train_step, donate_argnums=0)
_eval_step_jit = jax.jit(eval_step)


def _padded_batches(n: int, batch_size: int, order: np.ndarray | None = None):
    """Index arrays of exactly `batch_size` (the last one padded) plus the validity mask."""
    idx = np.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        chunk = idx[start : start + batch_size]
        valid = np.ones(batch_size, bool)
        if len(chunk) < batch_size:
            valid[len(chunk) :] = False
            chunk = np.concatenate([chunk, np.zeros(batch_size - len(chunk), chunk.dtype)])
        yield chunk, valid


def _evaluate(state, images, labels, batch_size: int = 256) -> tuple[float, float]:
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for chunk, valid in _padded_batches(len(images), batch_size):
        batch = {
            "image": to_unit_range(images[chunk]),
            "label": labels[chunk].astype(np.int32),
            "weight": valid.astype(np.float32),
        }
        out = _eval_step_jit(state, batch)
        for k in totals:
            totals[k] += float(out[k])
    return totals["loss_sum"] / totals["count"], totals["correct"] / totals["count"]


def fit_classifier(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    *,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    class_weights: bool = True,
    model: nn.Module | None = None,
    verbose: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Train the classifier (paper 000 protocol); return the best-validation-loss variables
    (`{"params": ...}`, plus `"batch_stats"` for BatchNorm models) and the history.

    Images are uint8 NHWC. Shuffling, init and dropout all derive from `seed`. The last partial
    batch of an epoch is padded with zero-weight rows, so one compiled step serves every batch.
    `history` has per-epoch `train_loss`, `val_loss`, `val_accuracy`, plus `best_epoch` (0-based)
    and `class_weights`.
    """
    model = canonical_model(model)
    train_labels = np.asarray(train_labels).astype(np.int32)
    val_labels = np.asarray(val_labels).astype(np.int32)
    if len(train_images) != len(train_labels) or len(val_images) != len(val_labels):
        raise ValueError("images and labels differ in length")
    cw = balanced_class_weights(train_labels) if class_weights else np.ones(2, np.float32)
    state = create_state(model, train_images.shape[1:], lr=lr, seed=seed)
    rng = np.random.default_rng(seed)
    history: dict[str, Any] = {
        "train_loss": [],
        "val_loss": [],
        "val_accuracy": [],
        "class_weights": cw.tolist(),
    }
    best_loss, best_params, best_epoch = np.inf, None, -1
    start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(train_images))
        losses = []
        for chunk, valid in _padded_batches(len(train_images), batch_size, order):
            batch = {
                "image": to_unit_range(train_images[chunk]),
                "label": train_labels[chunk],
                "weight": (cw[train_labels[chunk]] * valid).astype(np.float32),
            }
            state, metrics = _train_step_jit(state, batch)
            losses.append(metrics["loss"])
        train_loss = float(np.mean(jax.device_get(losses)))
        val_loss, val_acc = _evaluate(state, val_images, val_labels)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_acc)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_params = jax.tree.map(lambda x: np.asarray(x), state.variables())
        if verbose:
            elapsed = time.perf_counter() - start
            eta = elapsed / (epoch + 1) * (epochs - epoch - 1)
            print(
                f"  epoch {epoch + 1}/{epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f}"
                f" val_acc {val_acc:.3f} ({elapsed:.0f}s, ETA {eta:.0f}s)",
                flush=True,
            )
    history["best_epoch"] = best_epoch
    return best_params, history


@functools.cache
def _predict_fn(model: nn.Module):
    """One jitted sigmoid(apply) per architecture (modules hash by their fields)."""
    return jax.jit(lambda v, x: jax.nn.sigmoid(model.apply(v, x, train=False)))


def predict_proba(
    weights: Any, images: np.ndarray, model: nn.Module | None = None, batch_size: int = 256
) -> np.ndarray:
    """Tumour probabilities (float64 (N,)) for uint8 NHWC images, in fixed-size padded batches.
    `weights` is what `fit_classifier` returned (or a bare params tree)."""
    fn = _predict_fn(canonical_model(model))
    variables = as_variables(weights)
    out = np.empty(len(images), np.float64)
    batch_size = min(batch_size, max(len(images), 1))
    for start, (chunk, valid) in zip(
        range(0, len(images), batch_size), _padded_batches(len(images), batch_size), strict=True
    ):
        probs = np.asarray(fn(variables, to_unit_range(images[chunk])))
        out[start : start + valid.sum()] = probs[valid]
    return out


def train_and_score(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    class_weights: bool = True,
    model: nn.Module | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """The paper-000 evaluation of one training set: fit (best val loss), pick the threshold on
    val (max F1), report test metrics. Each argument is (uint8 images NHWC, labels)."""
    params, history = fit_classifier(
        train[0],
        train[1],
        val_images=val[0],
        val_labels=val[1],
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        class_weights=class_weights,
        model=model,
        verbose=verbose,
    )
    from jaxsynth.eval.classification import binary_metrics, choose_threshold

    threshold = choose_threshold(val[1], predict_proba(params, val[0], model))
    metrics = binary_metrics(test[1], predict_proba(params, test[0], model), threshold)
    metrics["best_epoch"] = history["best_epoch"]
    return metrics


def fit_classifiers(datasets, seeds, **kwargs) -> list[tuple[Any, dict[str, Any]]]:
    """`fit_classifier` for every (datasets[i], seeds[i]) pair as one vmapped program; see
    `jaxsynth.tasks.classify_many.fit_classifiers` (same keyword arguments)."""
    from jaxsynth.tasks.classify_many import fit_classifiers as fit_many

    return fit_many(datasets, seeds, **kwargs)


def predict_proba_many(weights, images, model=None, **kwargs) -> np.ndarray:
    """(M, N) tumour probabilities of M models; see `classify_many.predict_proba_many`."""
    from jaxsynth.tasks.classify_many import predict_proba_many as predict_many

    return predict_many(weights, images, model, **kwargs)


# ----------------------------------------------------------------------------- engine plug-in
class ClassifierTask:
    """The study's classifiers as a `jaxsynth.train.task.Task` for the shared training engine.

    Same loss as `train_step` (class-weighted BCE), Adam. Config keys (all optional):
    `classifier.model` (`paper_cnn` default, or `resnet18` / `resnet50` / `mobilenet_v2` from
    `jaxsynth.models.classifier`, built for `config.image_size`; their BatchNorm running
    statistics live in the engine's `ModelState.batch_stats` and are checkpointed with it),
    `classifier.lr` (1e-3), `classifier.class_weight` ((w_normal, w_tumour); default (1, 1):
    compute them from the training labels with `balanced_class_weights` and put them in the
    config, since the engine's batches carry no per-example weight), and `classifier.hidden`,
    `classifier.dropout` for `PaperCNN`. The engine's batch is `{"image", "label"}` (float32
    [-1, 1], int32). `fit_classifier` remains the small loop the study uses (it also keeps the
    best-validation-loss weights, which the engine does not do).
    """

    name = "classifier"
    ema_name = "model"
    conditional = False

    def __init__(self, config) -> None:
        from jaxsynth.models.classifier import has_batch_stats
        from jaxsynth.study.arms import build_classifier

        cfg = config.get("classifier", None) or {}
        self.lr = float(cfg.get("lr", 1e-3))
        self.class_weight = tuple(float(w) for w in cfg.get("class_weight", (1.0, 1.0)))
        if cfg.get("model", "paper_cnn") == "paper_cnn":
            net = PaperCNN(
                hidden=int(cfg.get("hidden", 128)), dropout_rate=float(cfg.get("dropout", 0.5))
            )
        else:  # the study's builder: same names, same one-line error for an unknown one
            net = build_classifier(cfg, int(config.get("image_size", 32)))
        self.net = canonical_model(net)
        self.batch_norm = has_batch_stats(self.net)

    def init(self, rng, sample_batch):
        from jaxsynth.train.state import ModelState, TrainState

        init_rng, base_rng = jax.random.split(rng)
        variables = self.net.init(init_rng, sample_batch["image"][:1])
        model = ModelState.create(
            variables["params"],
            _adam(self.lr),
            batch_stats=variables.get("batch_stats"),
            ema_decay=0.0,
        )
        return TrainState.create(base_rng, {"model": model})

    def train_step(self, state, batch, rng):
        weights = jnp.asarray(self.class_weight, jnp.float32)[batch["label"]]
        model = state["model"]

        def loss_fn(params):
            variables = {
                "params": params,
                **({"batch_stats": model.batch_stats} if self.batch_norm else {}),
            }
            out = self.net.apply(
                variables,
                batch["image"],
                train=True,
                rngs={"dropout": rng},
                mutable=["batch_stats"] if self.batch_norm else False,
            )
            logits, updates = out if self.batch_norm else (out, {})
            return weighted_bce(logits, batch["label"], weights), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(model.params)
        model = model.apply_gradients(grads, batch_stats=updates.get("batch_stats"))
        return state.with_model("model", model), {
            "loss": loss,
            "grad_norm": optax.global_norm(grads),
        }


def make_task(config) -> ClassifierTask:
    """Factory for `config.task = "jaxsynth.tasks.classify:make_task"`."""
    return ClassifierTask(config)
