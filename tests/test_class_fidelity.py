"""`ClassFidelity` ("does each class look like its class"): scored on the phantom's real held-out
tiles standing in for a perfect generator, then with the labels swapped and with one class drawn
for both labels; FIDs against the eval module."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxsynth.data.sources import open_source
from jaxsynth.data.split import build_study_split
from jaxsynth.eval import fid
from jaxsynth.tasks.domain import class_fidelity


@pytest.fixture(scope="module")
def reference():
    counts = {
        "train": {"normal": 200, "tumour": 200},
        "val": {"normal": 40, "tumour": 40},
        "test": {"normal": 100, "tumour": 100},
    }
    split = build_study_split(open_source("phantom"), seed=0, image_size=16, counts=counts)
    # the "generated" tiles: 60 real test tiles per class, kept out of the reference's held-out
    fresh, keep = {}, np.zeros(len(split.test), bool)
    for name in ("normal", "tumour"):
        idx = np.flatnonzero(split.test.labels == split.label_of(name))
        fresh[name] = split.test.images[idx[40:]]
        keep[idx[:40]] = True
    split = dataclasses.replace(split, test=split.test.select(keep))
    return class_fidelity(split, minority="tumour", epochs=3), fresh


def test_real_tiles_of_each_class_score_like_their_class(reference):
    ref, fresh = reference
    good = ref.score(fresh)
    n, t = good["per_class"]["normal"], good["per_class"]["tumour"]
    # own class is nearer than the other class, for both labels
    assert n["fid"] < n["fid_vs_other_classes"]["tumour"]
    assert t["fid"] < t["fid_vs_other_classes"]["normal"]
    assert n["real_classifier_p_minority"] < t["real_classifier_p_minority"]
    assert good["real_classifier_auc_on_samples"] > 0.75
    assert good["real_classifier_auc_on_real"] > 0.75
    # the FID is the eval module's, on the reference's features
    feats = ref.extractor(fresh["normal"])
    assert n["fid"] == pytest.approx(fid.fid_from_features(ref.feats_of[0], feats), rel=1e-6)
    assert n["num_fake"] == 60 and n["num_real"] == 80


def test_swapped_or_ignored_labels_are_caught(reference):
    ref, fresh = reference
    good = ref.score(fresh)
    swapped = ref.score({"normal": fresh["tumour"], "tumour": fresh["normal"]})
    assert swapped["real_classifier_auc_on_samples"] == pytest.approx(
        1.0 - good["real_classifier_auc_on_samples"], abs=1e-9
    )
    assert (
        swapped["per_class"]["normal"]["fid"]
        > swapped["per_class"]["normal"]["fid_vs_other_classes"]["tumour"]
    )
    # a "conditional" model that draws the same tissue for both labels: AUC 0.5 exactly
    same = ref.score({"normal": fresh["normal"], "tumour": fresh["normal"]})
    assert same["real_classifier_auc_on_samples"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="tumour"):
        ref.score({"normal": fresh["normal"]})


def test_copies_of_training_tiles_are_flagged_as_memorised(reference):
    """Each class's samples are checked against that class's TRAINING tiles: fresh real tiles
    are (almost) never flagged, copies of training tiles always are; floats in [-1, 1] (what
    the samplers return) score like their uint8 form."""
    ref, fresh = reference
    good = ref.score(fresh)
    copies = {n: ref.train_of[ref.names.index(n)][:60] for n in ref.names}
    copied = ref.score(copies)
    for name in ref.names:
        assert good["per_class"][name]["memorized_fraction"] <= 0.05
        assert copied["per_class"][name]["memorized_fraction"] == 1.0
        assert copied["per_class"][name]["median_train_heldout_ratio"] == 0.0
        assert good["per_class"][name]["median_train_heldout_ratio"] > 0.8
    as_float = {n: x.astype(np.float32) / 127.5 - 1.0 for n, x in fresh.items()}
    again = ref.score(as_float)
    assert again["per_class"]["tumour"]["fid"] == pytest.approx(
        good["per_class"]["tumour"]["fid"], rel=1e-4
    )
