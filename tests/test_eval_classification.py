"""Classifier metrics vs scikit-learn; bootstrap CI coverage; DeLong vs a brute-force reference."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from jaxsynth.eval import classification as cls


def _data(seed=0, n_pos=40, n_neg=80, shift=1.0, ties=False):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    s = np.r_[rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)]
    s = 1 / (1 + np.exp(-s))
    if ties:
        s = np.round(s, 1)
    return y, s


@pytest.mark.parametrize("ties", [False, True])
def test_binary_metrics_equal_sklearn(ties):
    y, s = _data(ties=ties)
    m = cls.binary_metrics(y, s, threshold=0.55)
    pred = (s >= 0.55).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert m["recall"] == m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()


def test_multiclass_per_class_and_macro_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    pred[pred == 3] = 2  # class 3 never predicted: precision 0 by convention
    m = cls.per_class_metrics(y, pred, 4)
    p, r, f, sup = skm.precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    np.testing.assert_allclose(m["precision"], p)
    np.testing.assert_allclose(m["recall"], r)
    np.testing.assert_allclose(m["f1"], f)
    assert m["support"] == sup.tolist()
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    cm = skm.confusion_matrix(y, pred, labels=range(4))
    spec = [
        (cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]) / (cm.sum() - cm[c].sum())
        for c in range(4)
    ]
    np.testing.assert_allclose(m["specificity"], spec)


def test_multiclass_macro_auc_equals_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 150)
    logits = rng.standard_normal((150, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = cls.macro_roc_auc_ovr(y, probs)
    assert out["macro"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-12
    )
    assert out["per_class"][1] == pytest.approx(skm.roc_auc_score(y == 1, probs[:, 1]))


def test_threshold_chosen_on_validation_maximises_f1():
    y, s = _data(seed=2)
    t = cls.choose_threshold(y, s, "f1")
    best = max(skm.f1_score(y, (s >= u).astype(int)) for u in np.unique(s))
    assert cls.binary_metrics(y, s, t)["f1"] == pytest.approx(best)
    ty = cls.choose_threshold(y, s, "youden")
    fpr, tpr, _ = skm.roc_curve(y, s)
    m = cls.binary_metrics(y, s, ty)
    assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx((tpr - fpr).max())


@pytest.mark.parametrize("criterion", ["f1", "youden"])
def test_threshold_matches_brute_force_with_ties_and_sits_between_scores(criterion):
    """Brute force over every candidate cut (sklearn metrics); ties -> the highest threshold."""
    rng = np.random.default_rng(5)
    y = np.array([1] * 12 + [0] * 100)
    s = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0, 1), 2)  # many tied scores
    t = cls.choose_threshold(y, s, criterion)
    u = np.unique(s)
    cands = np.r_[u[0] - 1e-9, (u[:-1] + u[1:]) / 2, u[-1] + 1e-9]

    def value(c):
        pred = (s >= c).astype(int)
        if criterion == "f1":
            return skm.f1_score(y, pred, zero_division=0)
        return skm.recall_score(y, pred) + skm.recall_score(1 - y, 1 - pred) - 1

    vals = np.array([value(c) for c in cands])
    assert value(t) == pytest.approx(vals.max())
    assert t == pytest.approx(cands[vals >= vals.max() - 1e-12].max(), abs=1e-8)
    assert not np.any(s == t)


def test_bootstrap_ci_covers_true_auc_and_f1_at_nominal_rate():
    """200 seeded replications of a test set whose true AUC and F1 are known in closed form."""
    shift, thr = 1.0, 0.5
    true_auc = stats.norm.cdf(shift / math.sqrt(2))
    sens, fpr = stats.norm.sf(thr - shift), stats.norm.sf(thr)  # balanced classes
    prec = sens / (sens + fpr)
    true_f1 = 2 * prec * sens / (prec + sens)
    rng = np.random.default_rng(123)
    cover_auc = cover_f1 = 0
    reps = 200
    for r in range(reps):
        y = np.r_[np.ones(60, int), np.zeros(60, int)]
        s = np.r_[rng.normal(shift, 1, 60), rng.normal(0, 1, 60)]
        ci = cls.bootstrap_binary_cis(y, s, threshold=thr, num_boot=300, seed=r)
        cover_auc += ci["roc_auc"]["low"] <= true_auc <= ci["roc_auc"]["high"]
        cover_f1 += ci["f1"]["low"] <= true_f1 <= ci["f1"]["high"]
    assert 0.90 <= cover_auc / reps <= 0.99, cover_auc / reps
    assert 0.90 <= cover_f1 / reps <= 0.99, cover_f1 / reps


def test_vectorised_bootstrap_equals_generic_loop():
    y, s = _data(seed=9, ties=True)
    fast = cls.bootstrap_binary_cis(y, s, threshold=0.6, num_boot=60, seed=4)
    for name in ("roc_auc", "pr_auc", "f1", "macro_f1", "accuracy", "specificity", "precision"):
        metric = lambda yy, ss, n=name: cls.binary_metrics(yy, ss, 0.6)[n]
        slow = cls.bootstrap_ci(metric, y, s, num_boot=60, seed=4)
        assert (fast[name]["low"], fast[name]["high"]) == pytest.approx(
            (slow["low"], slow["high"]), abs=1e-12
        ), name
        assert fast[name]["value"] == pytest.approx(slow["value"])


def _delong_reference(y, a, b):
    """DeLong 1988 written from the paper's definitions with O(n^2) pairwise comparisons."""
    y = y.astype(bool)

    def comps(s):
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None]).astype(float) + 0.5 * (x[:, None] == z[None])
        return psi.mean(1), psi.mean(0), psi.mean()

    v10a, v01a, auc_a = comps(a)
    v10b, v01b, auc_b = comps(b)
    m, n = y.sum(), (~y).sum()
    s10 = np.cov([v10a, v10b])
    s01 = np.cov([v01a, v01b])
    s = s10 / m + s01 / n
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (auc_b - auc_a) / math.sqrt(var)
    return auc_a, auc_b, z, 2 * stats.norm.sf(abs(z))


@pytest.mark.parametrize("ties", [False, True])
def test_delong_equals_reference(ties):
    y, a = _data(seed=4, ties=ties)
    rng = np.random.default_rng(5)
    b = np.clip(a + rng.normal(0.05, 0.15, len(a)) * (2 * y - 1), 0, 1)  # correlated, better
    if ties:
        b = np.round(b, 1)
    out = cls.delong_test(y, a, b)
    auc_a, auc_b, z, p = _delong_reference(y, a, b)
    assert out["auc_a"] == pytest.approx(auc_a) == pytest.approx(skm.roc_auc_score(y, a))
    assert out["auc_b"] == pytest.approx(auc_b) == pytest.approx(skm.roc_auc_score(y, b))
    assert out["z"] == pytest.approx(z, rel=1e-9)
    assert out["p_value"] == pytest.approx(p, rel=1e-9)
    # Cross-check the DeLong standard error against the paired bootstrap's spread.
    pb = cls.paired_bootstrap(cls.roc_auc, y, a, b, num_boot=400, seed=0, stratified=True)
    boot_se = (pb["high"] - pb["low"]) / (2 * 1.96)
    assert 0.7 < out["se"] / boot_se < 1.4


def test_paired_bootstrap():
    y, a = _data(seed=6)
    same = cls.paired_bootstrap(cls.roc_auc, y, a, a, num_boot=100)
    assert same["delta"] == 0 and same["low"] == same["high"] == 0 and same["p_value"] == 1.0
    rng = np.random.default_rng(7)
    better = np.where(y == 1, a + 0.3, a) + rng.normal(0, 0.01, len(a))
    out = cls.paired_bootstrap(cls.roc_auc, y, a, better, num_boot=300)
    assert out["delta"] == pytest.approx(skm.roc_auc_score(y, better) - skm.roc_auc_score(y, a))
    assert 0 < out["low"] <= out["delta"] <= out["high"] and out["p_value"] < 0.01


def test_tsne_plot_writes_png(tmp_path):
    rng = np.random.default_rng(8)
    real, fake = rng.standard_normal((30, 6)), rng.standard_normal((20, 6)) + 4
    out = cls.tsne_plot(real, fake, tmp_path / "tsne.png")
    from PIL import Image

    assert Image.open(out["path"]).size[0] > 100
    assert out["embedding"].shape == (50, 2) and out["is_fake"].sum() == 20
    # Well-separated inputs stay separated: nearest neighbour in the embedding shares the label.
    e = out["embedding"]
    d = np.linalg.norm(e[:, None] - e[None], axis=-1) + np.eye(50) * 1e9
    assert (out["is_fake"][d.argmin(1)] == out["is_fake"]).mean() > 0.95
