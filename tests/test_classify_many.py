"""Many classifiers: each member's model depends only on its own data and seed.

Three training sets of different sizes (so different engine programs' record counts within
one bucket), different seeds and class balances, trained in one `fit_classifiers` call: every
model's best epoch, curves and predictions equal `fit_classifier` run alone for that dataset and
seed (what the study's per-member cache relies on), and the vmapped prediction of many models
equals one-at-a-time prediction.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxsynth.models.classifier import PaperCNN
from jaxsynth.tasks.classify import fit_classifier, predict_proba
from jaxsynth.tasks.classify_many import fit_classifiers, predict_proba_many

MODEL = PaperCNN(filters=(4, 8), hidden=8)
KW = dict(epochs=3, batch_size=8, lr=3e-3, class_weights=True, model=MODEL)


def blob_data(n: int, tumour: int, seed: int):
    """n uint8 12-px tiles, the first `tumour` of them tumours with a bright learnable blob
    (also the data of tests/test_members.py)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, np.int32)
    labels[:tumour] = 1
    images = rng.integers(0, 120, (n, 12, 12, 3), dtype=np.uint8)
    images[labels == 1, 3:9, 3:9] += 100  # a learnable blob
    return images, labels


@pytest.mark.slow
def test_fit_classifiers_members_equal_one_at_a_time():
    datasets = [blob_data(37, 6, 0), blob_data(20, 10, 1), blob_data(29, 4, 2)]
    seeds = [5, 6, 5]
    val_images, val_labels = blob_data(30, 8, 9)
    many = fit_classifiers(datasets, seeds, val_images=val_images, val_labels=val_labels, **KW)
    assert len(many) == 3
    probs_many = predict_proba_many([v for v, _ in many], val_images, MODEL, vmap=True)
    assert probs_many.shape == (3, 30)
    for i in (2, 0):  # alone, and in another order than the group's
        (images, labels), seed = datasets[i], seeds[i]
        ref_vars, ref_hist = fit_classifier(
            images, labels, val_images=val_images, val_labels=val_labels, seed=seed, **KW
        )
        variables, hist = many[i]
        assert hist["best_epoch"] == ref_hist["best_epoch"]
        assert hist["class_weights"] == ref_hist["class_weights"]
        for key in ("train_loss", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(hist[key], ref_hist[key], rtol=1e-5, atol=1e-6)
        ref_probs = predict_proba(ref_vars, val_images, MODEL)
        np.testing.assert_allclose(
            predict_proba(variables, val_images, MODEL), ref_probs, atol=1e-6
        )
        np.testing.assert_allclose(probs_many[i], ref_probs, atol=1e-5)
    # different data and seeds really gave different models
    assert np.abs(probs_many[0] - probs_many[1]).max() > 1e-3


def test_arm_group_trains_its_uncached_members_in_one_call(tmp_path, monkeypatch):
    """The study's wiring: the first member stage trains every member not cached on disk, in
    one call; each stage writes its own result; a rerun with one member's cache deleted trains
    only that member."""
    import ml_collections

    from jaxsynth.study import arms as arms_lib
    from jaxsynth.study import rare_tumour
    from jaxsynth.study.arm_group import ArmGroup
    from jaxsynth.study.stages import Stage, StageRunner

    calls = []

    def fake_pairs(pairs, split, cfg):
        calls.append([(arm.name, seed) for arm, seed in pairs])
        return [
            ({"arm": arm.name, "seed": seed, "f1": seed / 10}, {"w": seed}) for arm, seed in pairs
        ]

    monkeypatch.setattr(arms_lib, "train_and_score_pairs", fake_pairs)
    monkeypatch.setattr(rare_tumour, "study_split", lambda ctx: None)
    arm = arms_lib.ArmData(
        "a", np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int32), np.zeros(2, bool), None
    )
    config = ml_collections.ConfigDict({"classifier": {"epochs": 1}, "seed": 0})

    def stages():
        group = ArmGroup()
        split = Stage("split", lambda ctx: {})
        members = [
            rare_tumour.classifier_stage(name, s, build, group=group)
            for name, build in (("a", lambda sp, ctx: arm), ("b", lambda sp, ctx: "no images"))
            for s in (0, 1)
        ]
        return [split, *members]

    results = StageRunner(tmp_path, config).run(stages())
    assert calls == [[("a", 0), ("a", 1)]]  # one call; the skipped arm never trained
    assert results["arm_a_s1"]["seed"] == 1 and results["arm_a_s1"]["f1"] == 0.1
    assert results["arm_b_s0"]["skipped"] == "no images"
    (cached,) = (tmp_path / "stages").glob("arm_a_s1-*")
    assert (cached / "classifier.msgpack").is_file()
    import shutil

    shutil.rmtree(next((tmp_path / "stages").glob("arm_a_s0-*")))
    runner = StageRunner(tmp_path, config)
    runner.run(stages())
    assert calls[1:] == [[("a", 0)]] and runner.ran == ["arm_a_s0"]
