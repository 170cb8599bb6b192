"""Classifier metrics with uncertainty: what the papers report, plus the CIs they omit.

Papers 000 and 004 compare classifiers (real-only vs real+synthetic) by single numbers on small
test sets; a tumour F1 of 0.30 vs 0.81 on 100 tumour tiles needs an interval to mean anything.
Here: accuracy, precision, recall (= sensitivity), specificity, F1 per class and macro, ROC AUC,
PR AUC (average precision), confusion matrix; a decision threshold chosen on validation data
(never on test); percentile-bootstrap 95 % CIs; paired comparison of two classifiers on the
same test images (paired bootstrap of ΔF1 / ΔAUC, and DeLong's test for two correlated AUCs);
a t-SNE picture of real vs synthetic features (paper 004).

All metrics are written in numpy from their definitions (tested against scikit-learn); zero
divisions give 0.0, like sklearn's `zero_division=0`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import stats


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """C[i, j] = number of samples of true class i predicted as class j."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    return np.bincount(num_classes * y_true + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def per_class_metrics(y_true, y_pred, num_classes: int) -> dict:
    """Accuracy, per-class precision/recall/specificity/F1 lists and their macro averages."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    total = cm.sum()
    out = {"precision": [], "recall": [], "specificity": [], "f1": [], "support": []}
    for c in range(num_classes):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        tn = total - tp - fp - fn
        p, r = _div(tp, tp + fp), _div(tp, tp + fn)
        out["precision"].append(p)
        out["recall"].append(r)
        out["specificity"].append(_div(tn, tn + fp))
        out["f1"].append(_div(2 * tp, 2 * tp + fp + fn))
        out["support"].append(int(cm[c, :].sum()))
    for k in ("precision", "recall", "specificity", "f1"):
        out[f"macro_{k}"] = float(np.mean(out[k]))
    out["accuracy"] = _div(np.trace(cm), total)
    out["confusion_matrix"] = cm.tolist()
    return out


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve = P(score_pos > score_neg) + 0.5 P(tie) (Mann-Whitney)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, np.float64)
    n_pos, n_neg = y.sum(), (~y).sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(s)  # midranks handle ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_roc_auc_ovr(y_true, probs) -> dict:
    """Multi-class ROC AUC one-vs-rest: per-class AUC of probs[:, c] for "class c vs the rest",
    and their unweighted mean (sklearn's `roc_auc_score(multi_class="ovr", average="macro")`)."""
    y = np.asarray(y_true, int)
    p = np.asarray(probs, np.float64)
    per_class = [roc_auc(y == c, p[:, c]) for c in range(p.shape[1])]
    return {"per_class": per_class, "macro": float(np.mean(per_class))}


def average_precision(y_true, scores) -> float:
    """PR AUC as average precision: sum over thresholds of (R_k - R_{k-1}) * P_k (sklearn's)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, np.float64)
    if y.sum() == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # Distinct thresholds: the last index of each run of equal scores.
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_metrics(y_true, scores, threshold: float = 0.5) -> dict:
    """All binary metrics for positive-class scores (e.g. P(tumour)); positive = label 1.

    `f1`, `precision`, `recall`/`sensitivity`, `specificity` are for the positive class;
    `macro_f1` averages both classes; `roc_auc`, `pr_auc` are threshold-free.
    """
    y = np.asarray(y_true, int)
    s = np.asarray(scores, np.float64)
    pred = (s >= threshold).astype(int)
    pc = per_class_metrics(y, pred, 2)
    return {
        "accuracy": pc["accuracy"],
        "precision": pc["precision"][1],
        "recall": pc["recall"][1],
        "sensitivity": pc["recall"][1],
        "specificity": pc["recall"][0],
        "f1": pc["f1"][1],
        "macro_f1": pc["macro_f1"],
        "roc_auc": roc_auc(y, s),
        "pr_auc": average_precision(y, s),
        "confusion_matrix": pc["confusion_matrix"],
        "threshold": float(threshold),
    }


def choose_threshold(y_val, scores_val, criterion: str = "f1") -> float:
    """Threshold on positive-class scores chosen on VALIDATION data (predict positive when
    score >= threshold): maximises the positive-class F1 (`criterion="f1"`) or Youden's
    J = sensitivity + specificity - 1 (`"youden"`).

    Candidates are the midpoints between consecutive distinct scores (plus one below the lowest
    and one above the highest), so the cut never sits exactly on a validation example. Among
    tied candidates the highest threshold wins (the fewest positive calls). Vectorised: one sort.
    """
    y = np.asarray(y_val, int).astype(bool)
    s = np.asarray(scores_val, np.float64)
    if criterion not in ("f1", "youden"):
        raise ValueError(f"criterion must be 'f1' or 'youden', not '{criterion}'")
    u = np.unique(s)[::-1]  # distinct scores, descending
    if y.sum() == 0 or y.all() or len(u) < 2:
        return 0.5  # degenerate validation data: nothing to choose from
    # predicted positive at candidate k (k = 0: above everything) = scores >= u[k-1]
    order = np.searchsorted(-u, -s)  # rank of each score among the distinct ones
    tp = np.r_[0, np.cumsum(np.bincount(order, weights=y, minlength=len(u)))]
    pp = np.r_[0, np.cumsum(np.bincount(order, minlength=len(u)))]
    if criterion == "f1":
        value = 2 * tp / (pp + y.sum())
    else:
        fp = pp - tp
        value = tp / y.sum() - fp / max((~y).sum(), 1)
    cands = np.r_[u[0] + 1e-12, (u[:-1] + u[1:]) / 2, u[-1] - 1e-12]
    return float(cands[int(np.argmax(value))])


def resample_indices(
    y: np.ndarray, num_boot: int, seed: int, stratified: bool = True
) -> np.ndarray:
    """(num_boot, N) bootstrap index sets. Stratified: each class is resampled within itself,
    so every resample keeps the test set's class counts (AUC always defined, the rare class
    never resampled away). All bootstrap functions draw through here, so the same seed gives
    the same resamples everywhere."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    if not stratified:
        return rng.integers(0, len(y), (num_boot, len(y)))
    parts = [
        rng.choice(np.flatnonzero(y == c), (num_boot, int((y == c).sum()))) for c in np.unique(y)
    ]
    return np.concatenate(parts, axis=1)


def _ci(values: np.ndarray, level: float) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    a = (1 - level) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true,
    scores,
    num_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
) -> dict:
    """Percentile bootstrap CI of any `metric(y, scores)`: {"value", "low", "high", "num_boot"}.

    Resamples where the metric is undefined (NaN) are dropped. For the standard binary metrics
    `bootstrap_binary_cis` is the same computation, vectorised."""
    y = np.asarray(y_true)
    s = np.asarray(scores)
    idx = resample_indices(y, num_boot, seed, stratified)
    vals = np.array([metric(y[i], s[i]) for i in idx], np.float64)
    low, high = _ci(vals, level)
    return {
        "value": float(metric(y, s)),
        "low": low,
        "high": high,
        "num_boot": int(np.isfinite(vals).sum()),
    }


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of the n samples appears in each resample: (num_boot, n)."""
    b = len(idx)
    flat = (idx + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _binary_from_counts(counts: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict:
    pos, hit = y == 1, pred == 1
    tp = counts @ (pos & hit)
    fp = counts @ (~pos & hit)
    fn = counts @ (pos & ~hit)
    tn = counts @ (~pos & ~hit)
    div = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)
    prec, rec = div(tp, tp + fp), div(tp, tp + fn)
    f1_pos = div(2 * tp, 2 * tp + fp + fn)
    f1_neg = div(2 * tn, 2 * tn + fn + fp)
    return {
        "accuracy": div(tp + tn, tp + tn + fp + fn),
        "precision": prec,
        "recall": rec,
        "sensitivity": rec,
        "specificity": div(tn, tn + fp),
        "f1": f1_pos,
        "macro_f1": (f1_pos + f1_neg) / 2,
    }


def _auc_from_counts(counts: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC of every resample from the pairwise win matrix: AUC_b = c_pos^T Psi c_neg / (m n)."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    sp, sn = s[pos], s[neg]
    psi = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
    cp, cn = counts[:, pos], counts[:, neg]
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((cp @ psi) * cn).sum(1) / (cp.sum(1) * cn.sum(1))


def _ap_from_counts(counts: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Average precision of every resample: cumulative weighted TP/FP at each distinct score
    (a score absent from a resample adds zero recall, so it contributes nothing, exactly as
    if it were not a threshold)."""
    order = np.argsort(-s, kind="mergesort")
    ss, pos = s[order], (y[order] == 1)
    c = counts[:, order]
    last = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1]
    tp = np.cumsum(c * pos, axis=1)[:, last]
    fp = np.cumsum(c * ~pos, axis=1)[:, last]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / tp[:, -1:]
    d_recall = np.diff(np.concatenate([np.zeros((len(c), 1)), recall], axis=1), axis=1)
    return (d_recall * precision).sum(1)


def bootstrap_binary_cis(
    y_true,
    scores,
    threshold: float = 0.5,
    num_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
) -> dict:
    """95 % percentile-bootstrap CIs of every `binary_metrics` number at once (vectorised; the
    resamples are those of `bootstrap_ci` with the same seed). Returns
    {metric: {"value", "low", "high"}} for accuracy, precision, recall, sensitivity,
    specificity, f1, macro_f1, roc_auc, pr_auc."""
    y = np.asarray(y_true, int)
    s = np.asarray(scores, np.float64)
    idx = resample_indices(y, num_boot, seed, stratified)
    counts = _counts(idx, len(y))
    boot = _binary_from_counts(counts, y, (s >= threshold).astype(int))
    m, n = int((y == 1).sum()), int((y != 1).sum())
    if m * n <= 4_000_000:
        boot["roc_auc"] = _auc_from_counts(counts, y, s)
    else:
        boot["roc_auc"] = np.array([roc_auc(y[i], s[i]) for i in idx])
    boot["pr_auc"] = _ap_from_counts(counts, y, s)
    point = binary_metrics(y, s, threshold)
    out = {}
    for k, v in boot.items():
        low, high = _ci(v, level)
        out[k] = {"value": point[k], "low": low, "high": high}
    return out


def paired_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true,
    scores_a,
    scores_b,
    num_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
) -> dict:
    """Δ = metric(b) - metric(a) on the same test images, resampling images jointly.

    Returns {"delta", "low", "high", "p_value"}: the two-sided p-value is twice the fraction of
    resampled Δ on the other side of 0 (capped at 1)."""
    y = np.asarray(y_true)
    a, b = np.asarray(scores_a), np.asarray(scores_b)
    idx = resample_indices(y, num_boot, seed, stratified)
    if metric is roc_auc and stratified:
        counts = _counts(idx, len(y))
        deltas = _auc_from_counts(counts, y, b.astype(np.float64)) - _auc_from_counts(
            counts, y, a.astype(np.float64)
        )
    else:
        deltas = np.array([metric(y[i], b[i]) - metric(y[i], a[i]) for i in idx], np.float64)
    deltas = deltas[np.isfinite(deltas)]
    low, high = _ci(deltas, level)
    p = 2 * min((deltas <= 0).mean(), (deltas >= 0).mean())
    return {
        "delta": float(metric(y, b) - metric(y, a)),
        "low": low,
        "high": high,
        "p_value": float(min(1.0, p)),
    }


def _placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong structural components via midranks (Sun & Xu 2014), O(n log n).

    V10[i] = fraction of negatives below positive i (ties 1/2); V01[j] = fraction of positives
    above negative j."""
    m, n = len(pos), len(neg)
    all_ranks = stats.rankdata(np.r_[pos, neg])
    v10 = (all_ranks[:m] - stats.rankdata(pos)) / n
    v01 = 1.0 - (all_ranks[m:] - stats.rankdata(neg)) / m
    return v10, v01


def delong_test(y_true, scores_a, scores_b) -> dict:
    """DeLong, DeLong & Clarke-Pearson (1988) test of AUC_a = AUC_b on the same samples.

    Returns {"auc_a", "auc_b", "delta" (= b - a), "se", "z", "p_value", "ci_low", "ci_high"}
    (95 % normal CI of the difference)."""
    y = np.asarray(y_true).astype(bool)
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    m, n = y.sum(), (~y).sum()
    if m < 2 or n < 2:
        raise ValueError("DeLong needs at least 2 positives and 2 negatives")
    v10a, v01a = _placements(a[y], a[~y])
    v10b, v01b = _placements(b[y], b[~y])
    auc_a, auc_b = v10a.mean(), v10b.mean()
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    delta = auc_b - auc_a
    se = math.sqrt(max(var, 0.0))
    z = delta / se if se > 0 else (0.0 if delta == 0 else math.copysign(math.inf, delta))
    p = float(2 * stats.norm.sf(abs(z)))
    return {
        "auc_a": float(auc_a),
        "auc_b": float(auc_b),
        "delta": float(delta),
        "se": se,
        "z": float(z),
        "p_value": p,
        "ci_low": float(delta - 1.959963984540054 * se),
        "ci_high": float(delta + 1.959963984540054 * se),
    }


def tsne_plot(
    features_real: np.ndarray,
    features_fake: np.ndarray,
    path: str | Path,
    seed: int = 0,
    perplexity: float = 30.0,
    title: str = "t-SNE of features: real vs synthetic",
) -> dict:
    """Embed real and synthetic features together with t-SNE and save a scatter PNG.

    Returns {"path", "embedding" (N, 2), "is_fake" (N,)} so callers can also quantify overlap.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    x = np.concatenate([features_real, features_fake]).astype(np.float64)
    is_fake = np.r_[np.zeros(len(features_real), bool), np.ones(len(features_fake), bool)]
    perplexity = min(perplexity, (len(x) - 1) / 3)
    # Exact gradients for small sets: faster than Barnes-Hut there, and no OpenMP spinning.
    method = "exact" if len(x) <= 500 else "barnes_hut"
    tsne = TSNE(2, perplexity=perplexity, random_state=seed, init="pca", method=method)
    emb = tsne.fit_transform(x)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(*emb[~is_fake].T, s=8, alpha=0.7, label=f"real (n={(~is_fake).sum()})")
    ax.scatter(*emb[is_fake].T, s=8, alpha=0.7, label=f"synthetic (n={is_fake.sum()})")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return {"path": str(path), "embedding": emb, "is_fake": is_fake}


def bootstrap_draws(y_true, scores, threshold: float, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per-resample values of the threshold metrics and ROC AUC for given resample indices.

    `idx` comes from `resample_indices`; passing the same `idx` for several classifiers scored
    on the same test images gives paired draws (used to average over seeds and to compare arms).
    Returns {metric: (num_boot,) array} for accuracy, precision, recall, sensitivity,
    specificity, f1, macro_f1, roc_auc."""
    y = np.asarray(y_true, int)
    s = np.asarray(scores, np.float64)
    counts = _counts(idx, len(y))
    out = _binary_from_counts(counts, y, (s >= threshold).astype(int))
    out["roc_auc"] = _auc_from_counts(counts, y, s)
    return out
