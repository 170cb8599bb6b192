"""Rare-class metrics vs scikit-learn; their bootstrap draws vs a per-resample loop."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, roc_curve

from jaxsynth.eval import classification as cls
from jaxsynth.eval import operating as op


def _data(seed=0, n_pos=20, n_neg=200, ties=False):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    s = np.r_[rng.beta(4, 2, n_pos), rng.beta(2, 4, n_neg)]
    if ties:
        s = np.round(s, 1)  # many tied scores across classes
    return y, s


def _sk_sens_at_spec(y, s, spec):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return tpr[fpr <= 1 - spec + 1e-12].max()


@pytest.mark.parametrize("ties", [False, True])
def test_point_metrics_match_sklearn(ties):
    y, s = _data(ties=ties)
    for spec in (0.9, 0.95):
        assert op.sensitivity_at_specificity(y, s, spec) == pytest.approx(
            _sk_sens_at_spec(y, s, spec)
        )
    assert op.brier_score(y, s) == pytest.approx(brier_score_loss(y, s))
    m = op.point_metrics(y, s, 0.5)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s))
    assert m["f1"] == pytest.approx(f1_score(y, s >= 0.5))


def test_sensitivity_at_specificity_on_a_hand_example():
    # negatives 0.1..0.9 (9 of them), positives 0.95, 0.85, 0.5. Specificity >= 8/9 allows one
    # false positive: the cut at 0.85 calls 0.95, 0.9 (the FP) and 0.85 -> sensitivity 2/3;
    # the next cut (0.8) would be a second FP. Specificity 1 stops above 0.9 -> 1/3.
    y = np.r_[np.zeros(9, int), 1, 1, 1]
    s = np.r_[np.arange(1, 10) / 10, 0.95, 0.85, 0.5]
    assert op.sensitivity_at_specificity(y, s, 8 / 9) == pytest.approx(2 / 3)
    assert op.sensitivity_at_specificity(y, s, 1.0) == pytest.approx(1 / 3)


def test_metric_draws_equal_a_loop_over_resamples():
    y, s = _data(1, ties=True)
    idx = cls.resample_indices(y, 30, seed=3)
    d = op.metric_draws(y, s, 0.55, idx)
    assert set(d) == set(op.METRICS)
    for b, i in enumerate(idx):
        ref = op.point_metrics(y[i], s[i], 0.55)
        for k in op.METRICS:
            assert d[k][b] == pytest.approx(ref[k]), (k, b)


def test_threshold_stability_narrows_with_more_validation_tumours():
    small = op.threshold_stability(*_data(2, n_pos=8, n_neg=80), num_boot=150, seed=0)
    large = op.threshold_stability(*_data(2, n_pos=200, n_neg=2000), num_boot=150, seed=0)
    assert small["val_positives"] == 8 and large["val_positives"] == 200
    assert large["boot_sd"] < small["boot_sd"]
    for r in (small, large):
        lo, hi = r["boot_ci95"]
        assert lo <= r["boot_median"] <= hi
    y, s = _data(2, n_pos=8, n_neg=80)
    assert small["threshold"] == cls.choose_threshold(y, s)
