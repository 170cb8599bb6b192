"""Many classifiers in one vmapped program equal the same classifiers trained one at a time.

Three training sets of different sizes (so different numbers of steps per epoch, masked at the
end), different seeds and class balances: every model's best-epoch choice, loss curves and
predictions must match `fit_classifier` run alone for that dataset and seed.
"""

from __future__ import annotations

import numpy as np

from jaxsynth.models.classifier import PaperCNN
from jaxsynth.tasks.classify import (
    fit_classifier,
    fit_classifiers,
    predict_proba,
    predict_proba_many,
)

MODEL = PaperCNN(filters=(4, 8), hidden=8)
KW = dict(epochs=3, batch_size=8, lr=3e-3, class_weights=True, model=MODEL)


def _data(n: int, tumour: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, np.int32)
    labels[:tumour] = 1
    images = rng.integers(0, 120, (n, 12, 12, 3), dtype=np.uint8)
    images[labels == 1, 3:9, 3:9] += 100  # a learnable blob
    return images, labels


def test_fit_classifiers_equals_one_at_a_time():
    datasets = [_data(37, 6, 0), _data(20, 10, 1), _data(29, 4, 2)]
    seeds = [5, 6, 5]
    val_images, val_labels = _data(30, 8, 9)
    many = fit_classifiers(datasets, seeds, val_images=val_images, val_labels=val_labels, **KW)
    assert len(many) == 3
    probs_many = predict_proba_many([v for v, _ in many], val_images, MODEL)
    assert probs_many.shape == (3, 30)
    for i, ((images, labels), seed) in enumerate(zip(datasets, seeds, strict=True)):
        ref_vars, ref_hist = fit_classifier(
            images, labels, val_images=val_images, val_labels=val_labels, seed=seed, **KW
        )
        variables, hist = many[i]
        assert hist["best_epoch"] == ref_hist["best_epoch"]
        assert hist["class_weights"] == ref_hist["class_weights"]
        for key in ("train_loss", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(hist[key], ref_hist[key], rtol=1e-4, atol=1e-5)
        ref_probs = predict_proba(ref_vars, val_images, MODEL)
        np.testing.assert_allclose(
            predict_proba(variables, val_images, MODEL), ref_probs, atol=1e-5
        )
        np.testing.assert_allclose(probs_many[i], ref_probs, atol=1e-5)
    # different data and seeds really gave different models
    assert np.abs(probs_many[0] - probs_many[1]).max() > 1e-3
