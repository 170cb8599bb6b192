"""The engine's member axis (`jaxsynth.train.members`): M classifiers trained in one vmapped
program each equal that classifier trained alone.

Three tiny training sets of different sizes (37, 20, 29 records at batch 8: none a multiple of
the batch, so the members' step budgets and validation epochs differ and the shorter ones are
frozen while the longest trains on), different seeds and class balances; a learning rate high
enough that two members' best epoch is the first:

* `fit_classifiers(vmap=True)` gives each member the best epoch, validation curve (rtol 1e-5),
  train-loss curve and predictions (atol 1e-5) of `fit_classifier` alone;
* a member's result (best and final weights, history, final step = its budget) does not depend
  on which members share the call, their order, or a longer member training on after it;
* K steps per dispatch (`lax.scan`) equals one step per dispatch;
* a non-finite loss names the member and the step;
* a training set padded further draws the same batches (why stacking members is exact).
"""

from __future__ import annotations

from fast_jax import configure  # noqa: E402

configure()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_classify_many import blob_data  # noqa: E402

from jaxsynth.models.classifier import PaperCNN  # noqa: E402
from jaxsynth.tasks import classify  # noqa: E402
from jaxsynth.tasks.classify_many import fit_classifiers  # noqa: E402
from jaxsynth.train.device_data import draw_batch, pad_records, seed_data_key  # noqa: E402
from jaxsynth.train.loop import TrainingDiverged  # noqa: E402
from jaxsynth.train.members import (  # noqa: E402
    Member,
    dispatch_sizes,
    eval_steps,
    train_members,
)

MODEL = PaperCNN(filters=(4, 8), hidden=8)
KW = dict(epochs=4, batch_size=8, lr=0.1, class_weights=True, model=MODEL)  # best epochs 0, 3, 0
SIZES = (37, 20, 29)
SEEDS = (5, 6, 5)


DATASETS = [blob_data(37, 6, 0), blob_data(20, 10, 1), blob_data(29, 4, 2)]
VAL = blob_data(30, 8, 9)


def _task():
    config = classify.run_config(
        image_size=12, batch_size=8, num_steps=1, lr=KW["lr"], seed=0, log_every=1
    )
    return classify.ClassifierTask(config, net=MODEL)


def _member(i: int, seed: int | None = None, epochs: int = KW["epochs"]) -> Member:
    images, labels = DATASETS[i]
    cw = classify.balanced_class_weights(labels)
    every = -(-len(images) // 8)
    return Member(
        {"image": images, "label": labels, "weight": cw[labels]},
        SEEDS[i] if seed is None else seed,
        epochs * every,
        every,
    )


def _run(members, **kw):
    return train_members(
        _task(), members, {"image": VAL[0], "label": VAL[1]}, batch_size=8, size=37, **kw
    )


def _close(a, b, atol=1e-6, rtol=1e-5):
    """Weights equal up to float32 rounding: scanned or vmapped programs may fuse and round
    differently (a CI run saw 1.2e-6 absolute on a weight of 0.6)."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=rtol)


def test_schedule_helpers():
    assert eval_steps(15, 5) == [5, 10, 15] and eval_steps(9, 4) == [4, 8, 9]
    assert eval_steps(7, 0) == [7]
    assert dispatch_sizes(13, 200) == [8, 4, 1] and dispatch_sizes(13, 4) == [4, 4, 4, 1]
    assert dispatch_sizes(3, 1) == [1, 1, 1] and dispatch_sizes(0, 8) == []


def test_padding_changes_no_draw():
    """A member padded to the group's size draws exactly the batches it draws alone: the
    order of its `count` records does not depend on the padding (partitionable threefry)."""
    images, labels = DATASETS[1]
    key = seed_data_key(6)
    alone = {k: jnp.asarray(v) for k, v in pad_records({"image": images, "label": labels}).items()}
    padded = {
        k: jnp.asarray(v) for k, v in pad_records({"image": images, "label": labels}, 300).items()
    }
    for arrays in (alone, padded):
        arrays["count"] = jnp.int32(20)
    for step in range(0, 12):  # ~5 epochs of 20 records at batch 8, across epoch boundaries
        a = draw_batch(alone, key, jnp.int32(step), 8)
        b = draw_batch(padded, key, jnp.int32(step), 8, least=8)
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(a["image"], b["image"])


@pytest.fixture(scope="module")
def alone():
    """Each member trained alone by the engine's lone path (`fit_classifier` -> `train()`)."""
    return [
        classify.fit_classifier(
            images, labels, val_images=VAL[0], val_labels=VAL[1], seed=seed, **KW
        )
        for (images, labels), seed in zip(DATASETS, SEEDS, strict=True)
    ]


def test_members_equal_each_member_alone(alone):
    many = fit_classifiers(
        DATASETS, list(SEEDS), val_images=VAL[0], val_labels=VAL[1], vmap=True, **KW
    )
    assert len(many) == 3
    best_epochs = []
    for (variables, hist), (ref_vars, ref_hist) in zip(many, alone, strict=True):
        assert hist["best_epoch"] == ref_hist["best_epoch"]
        best_epochs.append(hist["best_epoch"])
        assert hist["class_weights"] == ref_hist["class_weights"]
        assert len(hist["val_loss"]) == len(ref_hist["val_loss"]) == KW["epochs"]
        for key in ("train_loss", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(hist[key], ref_hist[key], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            classify.predict_proba(variables, VAL[0], MODEL),
            classify.predict_proba(ref_vars, VAL[0], MODEL),
            atol=1e-5,
        )
    assert best_epochs == [0, 3, 0]  # keep-best picked an early epoch, not only the last
    probs = [classify.predict_proba(v, VAL[0], MODEL) for v, _ in many]
    assert np.abs(probs[0] - probs[1]).max() > 1e-3  # different data and seeds: different models


def test_member_independent_of_the_others_and_frozen_after_its_budget():
    """Member 1 (20 records: 12 steps) next to the longest member (20 steps), next to another
    member in the other order, and with a longer step budget's member replaced: the same
    weights, history and final state, whose step counter stopped at its budget."""
    solo = _run([_member(1)])[0]  # alone on the axis: nothing to freeze
    with_long = _run([_member(1), _member(0)])
    other = _run([_member(2, seed=11), _member(1)])
    longer = _run([_member(1), _member(0, epochs=6)])
    a, b, c = with_long[0], other[1], longer[0]
    assert a.step == b.step == c.step == 12 and with_long[1].step == 20 and longer[1].step == 30
    assert [h["step"] for h in a.history] == [3, 6, 9, 12]
    for r in (b, c, solo):
        assert r.best_step == a.best_step
        np.testing.assert_allclose(
            [h["val_loss"] for h in r.history], [h["val_loss"] for h in a.history], rtol=1e-5
        )
        np.testing.assert_allclose(
            [h["loss"] for h in r.history], [h["loss"] for h in a.history], rtol=1e-5
        )
        _close(r.best, a.best)
        _close(r.final, a.final)
    # frozen: with the longer members it ends where it ends alone, not trained on to 20 or 30
    assert solo.step == 12 and a.history[-1]["step"] == a.step


def test_steps_per_dispatch_equal_single_steps():
    one = _run([_member(1), _member(2)], steps_per_dispatch=1)
    scanned = _run([_member(1), _member(2)], steps_per_dispatch=4)
    for r, s in zip(one, scanned, strict=True):
        assert (r.best_step, r.step) == (s.best_step, s.step)
        np.testing.assert_allclose(
            [h["val_loss"] for h in s.history], [h["val_loss"] for h in r.history], rtol=1e-5
        )
        _close(s.final, r.final)


def test_nonfinite_loss_names_member_and_step():
    bad = _member(2)
    bad.arrays = {**bad.arrays, "weight": np.full(29, np.inf, np.float32)}
    with pytest.raises(TrainingDiverged, match=r"member 1 \(seed 5\) diverged at step 0: loss="):
        _run([_member(1), bad])
