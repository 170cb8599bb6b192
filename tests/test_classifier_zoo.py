"""The classifier zoo (ResNet-18/50, MobileNetV2) against torchvision, and training with BatchNorm.

The parameter counts are torchvision's for `resnet18/resnet50/mobilenet_v2(num_classes=1)`
(11,177,025 / 23,510,081 / 2,225,153, printed by torchvision 0.24:
`sum(p.numel() for p in torchvision.models.resnet18(num_classes=1).parameters())`):
equal counts at 224 px mean the same layers, widths, biases and BatchNorm affine parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxsynth.config import load_config
from jaxsynth.errors import UserError
from jaxsynth.models import classifier as zoo
from jaxsynth.study.arms import build_classifier
from jaxsynth.tasks import classify

TORCHVISION_PARAMS = {"resnet18": 11_177_025, "resnet50": 23_510_081, "mobilenet_v2": 2_225_153}


def _shapes(model, size):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_equals_torchvision(name):
    variables = _shapes(zoo.build(name, 224), 224)
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == TORCHVISION_PARAMS[name]
    assert "batch_stats" in variables and zoo.has_batch_stats(zoo.build(name, 224))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_small_input_stem_keeps_spatial_size(name):
    """At 32 px the CIFAR-style stem is used (no 7x7/2 + pool), so the last stage is 4x4."""
    model = zoo.build(name, 32)
    assert model.small_input and not zoo.build(name, 64).small_input
    x = jnp.zeros((2, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    maps = [a for a in jax.tree.leaves(state["intermediates"]) if a.ndim == 4]
    assert min(a.shape[1] for a in maps) == 4  # 32 -> 16 -> 8 -> 4 across the strided stages
    feats = model.apply(variables, x, method=model.features)
    logits = model.apply(variables, x)
    assert logits.shape == (2,) and feats.ndim == 2


@pytest.mark.parametrize("arch", ["paper_cnn", "tiny_resnet"])
def test_fit_classifier_learns_a_separable_toy_and_keeps_best_epoch(arch):
    """Each architecture learns a separable toy; for BatchNorm models the running stats move
    and inference is per-image (a prediction does not depend on the rest of the batch)."""
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 40)
    images = rng.integers(0, 60, (80, 16, 16, 3)).astype(np.uint8)
    images[labels == 1] += 120  # tumour = bright
    model = (
        zoo.PaperCNN()
        if arch == "paper_cnn"
        else zoo.ResNet(stage_sizes=(1, 1), base_width=8, small_input=True)
    )
    variables, hist = classify.fit_classifier(
        images[:60],
        labels[:60],
        val_images=images[60:],
        val_labels=labels[60:],
        epochs=4,
        batch_size=16,
        seed=0,
        model=model,
    )
    assert hist["best_epoch"] == int(np.argmin(hist["val_loss"]))
    probs = classify.predict_proba(variables, images[60:], model=model, batch_size=7)
    assert probs.shape == (20,)
    assert np.all((probs > 0.5) == (labels[60:] == 1))
    alone = classify.predict_proba(variables, images[60:61], model=model)
    np.testing.assert_allclose(alone[0], probs[0], rtol=1e-5)
    if arch == "paper_cnn":
        assert set(variables) == {"params"}
    else:
        assert set(variables) == {"params", "batch_stats"}
        means = [np.abs(m).max() for m in jax.tree.leaves(variables["batch_stats"])]
        assert max(means) > 1e-3  # running statistics were updated from their init


def test_unknown_classifier_is_a_one_line_error():
    with pytest.raises(UserError, match="classifier.model='vgg'"):
        build_classifier(ml_collections.ConfigDict({"model": "vgg"}), 32)


def test_max_pool_2x2_equals_flax_max_pool_and_its_gradient():
    import flax.linen as nn

    from jaxsynth.models.layers import max_pool_2x2

    x = jax.random.normal(jax.random.key(3), (2, 13, 15, 4))  # odd sizes: trailing row dropped
    ref = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(max_pool_2x2(x), ref(x))
    w = jax.random.normal(jax.random.key(4), ref(x).shape)
    g = jax.grad(lambda v: jnp.sum(max_pool_2x2(v) * w))(x)
    g_ref = jax.grad(lambda v: jnp.sum(ref(v) * w))(x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-6)


def test_engine_classifier_task_trains_a_batchnorm_model():
    """`classifier.model=mobilenet_v2` through the engine's Task: the loss falls on a fixed
    batch, the BatchNorm running statistics are carried in the engine's ModelState and move,
    and an unknown model name is a one-line UserError naming the field."""
    cfg = load_config("classifier:smoke", ["--config.classifier.model=mobilenet_v2"])
    task = classify.make_task(cfg)
    assert task.batch_norm
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 4)
    images = rng.normal(0, 0.3, (8, 16, 16, 3)) + np.where(labels, 0.5, -0.5)[:, None, None, None]
    batch = {"image": jnp.asarray(images, jnp.float32), "label": jnp.asarray(labels, jnp.int32)}
    state = jax.jit(task.init)(jax.random.key(0), batch)
    stats0 = jax.tree.map(np.asarray, state["model"].batch_stats)
    assert stats0, "BatchNorm statistics must live in the engine state"
    step = jax.jit(task.train_step)
    losses = []
    for i in range(8):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] and np.isfinite(losses).all()
    moved = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - b).max()), state["model"].batch_stats, stats0
    )
    assert max(jax.tree.leaves(moved)) > 1e-3
    cfg.classifier.model = "vgg16"
    with pytest.raises(UserError, match="classifier.model='vgg16'"):
        classify.make_task(cfg)


def test_train_command_trains_the_classifier_config_through_the_engine(tmp_path):
    """`jaxsynth train --config classifier:smoke` runs the classifier Task on the engine: its
    checkpoints and metrics land in the workdir, the logged loss is finite, and the real
    validation split is evaluated with the best weights kept in `<workdir>/best`."""
    import json

    from jaxsynth.cli import main

    workdir = tmp_path / "clf"
    assert main(["train", "--config", "classifier:smoke", "--workdir", str(workdir)]) == 0
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert losses[-1]["step"] == 6 and np.isfinite(losses[-1]["loss"])
    assert (workdir / "checkpoints").is_dir()
    vals = [r for r in records if "val_loss" in r]  # train.eval_every=2 in the smoke preset
    best = json.loads((workdir / "best" / "best.json").read_text())
    assert [r["step"] for r in vals] == [2, 4, 6]
    assert best["step"] == min(vals, key=lambda r: r["val_loss"])["step"]


def test_validation_hook_keeps_the_lowest_val_loss_weights_and_a_resume_restores_them(tmp_path):
    """The engine's keep-best: `train.eval_every` evaluates the validation split, the weights
    of the lowest `val_loss` are saved in `<workdir>/best`, they score exactly that loss, and a
    resumed run takes the saved best over instead of starting from nothing."""
    import json

    import optax

    from jaxsynth.config import load_config
    from jaxsynth.train.hooks import Validation
    from jaxsynth.train.loop import TrainData, read_jsonl, train

    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 24, np.int32)
    images = rng.integers(0, 90, (48, 16, 16, 3)).astype(np.uint8)
    images[labels == 1] += 60
    config = load_config("classifier:smoke", ["train.eval_every=2", "num_steps=8"])
    val = {"image": images[32:], "label": labels[32:]}
    data = TrainData(arrays={"image": images[:32], "label": labels[:32]}, val_arrays=val)
    train(config, tmp_path, data, stream=open(tmp_path / "log.txt", "w"))
    records = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    assert best["step"] == min(records, key=lambda r: r["val_loss"])["step"]

    task = classify.ClassifierTask(config)
    hook = Validation(task=task, arrays=val, every=2, persist=True)
    state = task.init(jax.random.key(0), {"image": jnp.zeros((2, 16, 16, 3))})
    hook._open(tmp_path, state)
    assert (hook.best_step, hook.best_value) == (best["step"], best["val_loss"])
    logits = task.net.apply(hook.best, val["image"].astype(np.float32) / 127.5 - 1, train=False)
    loss = float(jnp.mean(optax.sigmoid_binary_cross_entropy(logits, val["label"])))
    np.testing.assert_allclose(loss, best["val_loss"], rtol=1e-5)
