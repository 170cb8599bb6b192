"""Training and scoring the paper-000 tumour classifier (real-only or augmented training sets).

The protocol follows paper 000: binary cross-entropy with "balanced" class weights (as sklearn's
`compute_class_weight("balanced")`: w_c = n / (2 n_c)), Adam, 10 epochs of batch 32, and the
weights of the epoch with the lowest validation loss kept (Keras `restore_best_weights`). The
decision threshold is then chosen on the validation split (max F1) -- never on the test split.

Every classifier trains through the one engine (`jaxsynth.train.loop.train`): `ClassifierTask`
is the model plugged in, the engine's `Validation` hook evaluates each epoch and keeps the best
weights, and `fit_classifier` is the in-memory entry point to that path (no second loop).
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsynth.models.classifier import PaperCNN
from jaxsynth.train.device_data import fixed_batches

DEFAULT_MODEL = PaperCNN()
_CANONICAL: dict[nn.Module, nn.Module] = {}


def canonical_model(model: nn.Module | None) -> nn.Module:
    """The first-seen instance equal to `model` (Flax modules compare by their fields).

    Tasks with equal modules then share the engine's compiled programs (`cache_key`), so a
    study compiles the step once per architecture and image shape, not once per model.
    """
    model = DEFAULT_MODEL if model is None else model
    return _CANONICAL.setdefault(model, model)


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
    workdir: str | Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train the classifier (paper 000 protocol) through the engine; return the
    best-validation-loss variables (`{"params": ...}`, plus `"batch_stats"` for BatchNorm
    models) and the history.

    Images are uint8 NHWC. The run is `epochs * ceil(n / batch_size)` engine steps over the
    engine's epoch stream (one shuffled pass per epoch, batches running across epoch
    boundaries), each example weighted by its class's balanced weight; validation loss and
    accuracy are measured at every epoch boundary and the best epoch's weights kept (the
    engine's `Validation` hook). Init, order and dropout derive from `seed`. `workdir` keeps the
    run (checkpoints, metrics, TensorBoard) there; by default it is a scratch run in a temporary
    directory (`train(..., scratch=True)`: nothing saved).
    `history` has per-epoch `train_loss`, `val_loss`, `val_accuracy`, plus `best_epoch`
    (0-based) and `class_weights`.
    """
    from jaxsynth.train.hooks import Validation
    from jaxsynth.train.loop import TrainData, read_jsonl, train

    model = canonical_model(model)
    train_labels = np.asarray(train_labels).astype(np.int32)
    val_labels = np.asarray(val_labels).astype(np.int32)
    if len(train_images) != len(train_labels) or len(val_images) != len(val_labels):
        raise ValueError("images and labels differ in length")
    cw = balanced_class_weights(train_labels) if class_weights else np.ones(2, np.float32)
    per_epoch = math.ceil(len(train_images) / batch_size)
    config = run_config(
        image_size=int(train_images.shape[1]),
        batch_size=batch_size,
        num_steps=epochs * per_epoch,
        lr=lr,
        seed=seed,
        log_every=per_epoch,
    )
    task = ClassifierTask(config, net=model)
    validation = Validation(
        task=task, arrays={"image": val_images, "label": val_labels}, every=per_epoch
    )
    data = TrainData(
        arrays={"image": train_images, "label": train_labels, "weight": cw[train_labels]}
    )
    with tempfile.TemporaryDirectory(prefix="jaxsynth-classifier-") as tmp:
        run_dir = Path(workdir) if workdir is not None else Path(tmp)
        train(
            config,
            run_dir,
            data,
            task=task,
            stream=None if verbose else _Discard(),
            hooks=[validation],
            scratch=workdir is None,
        )
        records = read_jsonl(run_dir / "metrics.jsonl")
    losses = {int(r["step"]): float(r["loss"]) for r in records if "loss" in r}
    history: dict[str, Any] = {
        "train_loss": [losses.get((e + 1) * per_epoch, float("nan")) for e in range(epochs)],
        "val_loss": [h["val_loss"] for h in validation.history],
        "val_accuracy": [h["val_accuracy"] for h in validation.history],
        "class_weights": cw.tolist(),
        "best_epoch": validation.best_step // per_epoch - 1,
    }
    return validation.best, history


class _Discard:
    """A text stream that drops everything (a quiet in-memory run)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def run_config(
    *,
    image_size: int,
    batch_size: int,
    num_steps: int,
    lr: float,
    seed: int,
    log_every: int,
):
    """The engine config of one `fit_classifier` run, from `configs/classifier.py`'s
    declarations (one home for the keys and their defaults): no periodic checkpoints, the
    training arrays on device, metrics every `log_every` steps."""
    from jaxsynth.config import load_config

    c = load_config("classifier")
    c.image_size = image_size
    c.batch_size = batch_size
    c.num_steps = num_steps
    c.seed = seed
    c.checkpoint_every = 0
    c.classifier.lr = float(lr)
    c.train.log_every = log_every
    c.train.keep_checkpoints = 1
    c.train.device_data = "on"  # arrays the caller already holds in memory
    return c


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
    for chunk, valid in fixed_batches(len(images), batch_size):
        probs = np.asarray(fn(variables, to_unit_range(images[chunk])))
        out[chunk[valid]] = probs[valid]
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


# ----------------------------------------------------------------------------- engine plug-in
class ClassifierTask:
    """The study's classifiers as a `jaxsynth.train.task.Task` for the shared training engine.

    Class-weighted BCE (`weighted_bce`), Adam. Config keys:
    `classifier.model` (`paper_cnn` default, or `resnet18` / `resnet50` / `mobilenet_v2` from
    `jaxsynth.models.classifier`, built for `config.image_size`; their BatchNorm running
    statistics live in the engine's `ModelState.batch_stats` and are checkpointed with it),
    `classifier.lr` (1e-3), `classifier.class_weight` ((w_normal, w_tumour); default (1, 1):
    compute them from the training labels with `balanced_class_weights` and put them in the
    config; a batch with a per-example `weight` column, as `fit_classifier` gives, uses that
    instead), and `classifier.hidden`, `classifier.dropout` for `PaperCNN`. `net` (a Flax
    module) replaces the one the config names. The engine's batch is `{"image", "label",
    "weight"?}` (float32 [-1, 1], int32, float32). `eval_step` and `eval_variables` serve the
    engine's `Validation` hook. Tasks with the same module, learning rate and class weights
    share compiled programs (`cache_key`).
    """

    name = "classifier"
    ema_name = "model"
    conditional = False

    def __init__(self, config, net: nn.Module | None = None) -> None:
        from jaxsynth.models.classifier import build_from_config, has_batch_stats

        cfg = config.classifier  # every key declared, with its default, in configs/classifier.py
        self.lr = float(cfg.lr)
        self.class_weight = tuple(float(w) for w in cfg.class_weight)
        if net is None and cfg.model == "paper_cnn":
            net = PaperCNN(hidden=int(cfg.hidden), dropout_rate=float(cfg.dropout))
        elif net is None:  # the study's builder: same names, same one-line error for an unknown
            net = build_from_config(cfg, int(config.image_size))
        self.net = canonical_model(net)
        self.batch_norm = has_batch_stats(self.net)
        self.cache_key = (self.net, self.lr, self.class_weight)

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

    def _weights(self, batch) -> jnp.ndarray:
        if "weight" in batch:
            return batch["weight"]
        return jnp.asarray(self.class_weight, jnp.float32)[batch["label"]]

    def eval_variables(self, state) -> dict:
        """The variables `apply` and `predict_proba` take (params, BatchNorm statistics)."""
        model = state["model"]
        return {
            "params": model.params,
            **({"batch_stats": model.batch_stats} if self.batch_norm else {}),
        }

    def eval_step(self, state, batch) -> dict:
        """Sums over a padded batch (`weight` 0 on padding): unweighted BCE (Keras' val_loss),
        correct predictions, rows."""
        logits = self.net.apply(self.eval_variables(state), batch["image"], train=False)
        valid = batch["weight"] > 0
        bce = optax.sigmoid_binary_cross_entropy(logits, batch["label"].astype(jnp.float32))
        correct = (logits > 0) == (batch["label"] > 0)
        return {
            "loss": jnp.sum(jnp.where(valid, bce, 0.0)),
            "accuracy": jnp.sum(valid & correct).astype(jnp.float32),
            "count": jnp.sum(valid).astype(jnp.float32),
        }

    def train_step(self, state, batch, rng):
        weights = self._weights(batch)
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
        # No grad-norm metric: on XLA:CPU the extra reduction over the gradients measured ~25 %
        # of this small CNN's step (docs/speed.md); a non-finite gradient makes the next
        # step's loss non-finite, which the engine's guard catches one step later.
        return state.with_model("model", model), {"loss": loss}


def make_task(config) -> ClassifierTask:
    """Factory for `config.task = "jaxsynth.tasks.classify:make_task"`."""
    return ClassifierTask(config)
