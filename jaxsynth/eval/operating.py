"""Rare-class metrics beyond F1: threshold-free, operating-point and calibration numbers.

At 1:10 prevalence tumour F1 hangs on one threshold chosen on ~10 validation tumour tiles, and
ROC AUC is dominated by the easy majority class. So the study also reports (issue 19):

* AUPRC (average precision, the area under the precision-recall curve of the rare class; its
  chance level is the prevalence, not 0.5) — `classification.average_precision`;
* sensitivity at 90 % / 95 % specificity (the best recall among thresholds whose specificity is
  at least the target: how many tumours a screening operating point catches);
* the Brier score (mean squared error of the tumour probability: calibration + sharpness;
  lower is better);
* the stability of the validation-chosen F1 threshold under a bootstrap of the validation
  split, with the thresholds it would have chosen.

`metric_draws` gives every metric on every shared test resample at once (count-weighted,
vectorised), the input of the hierarchical bootstrap.
"""

from __future__ import annotations

import numpy as np

from jaxsynth.eval import classification as cls

# name -> (higher is better?) for every metric `metric_draws` returns.
METRICS = {
    "f1": True,
    "roc_auc": True,
    "pr_auc": True,
    "sens_at_spec90": True,
    "sens_at_spec95": True,
    "brier": False,
    "accuracy": True,
}
SPECIFICITIES = {"sens_at_spec90": 0.90, "sens_at_spec95": 0.95}


def sensitivity_at_specificity(y_true, scores, specificity: float) -> float:
    """Largest sensitivity over thresholds whose specificity is >= `specificity` (sklearn:
    max tpr over roc_curve points with fpr <= 1 - specificity)."""
    return float(
        _sens_at_spec_counts(
            np.ones((1, len(scores))),
            np.asarray(y_true, int),
            np.asarray(scores, float),
            specificity,
        )[0]
    )


def brier_score(y_true, scores) -> float:
    """Mean squared difference between the tumour probability and the 0/1 label."""
    y, s = np.asarray(y_true, np.float64), np.asarray(scores, np.float64)
    return float(np.mean((s - y) ** 2))


def _sens_at_spec_counts(counts: np.ndarray, y: np.ndarray, s: np.ndarray, spec: float):
    order = np.argsort(-s, kind="mergesort")
    ss, pos = s[order], y[order] == 1
    c = counts[:, order]
    last = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1]  # end of each tied-score run
    tp = np.cumsum(c * pos, axis=1)[:, last]
    fp = np.cumsum(c * ~pos, axis=1)[:, last]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / tp[:, -1:]
        fpr = fp / fp[:, -1:]
    ok = fpr <= (1.0 - spec) + 1e-12
    # tpr rises along the curve; the "call nothing positive" point (0, 0) is always allowed.
    return np.where(ok, tpr, 0.0).max(axis=1)


def metric_draws(y_true, scores, threshold: float, idx: np.ndarray) -> dict[str, np.ndarray]:
    """{metric: (num_boot,)} for every name in METRICS on the test resamples `idx`
    (`classification.resample_indices`); the same `idx` for every run keeps runs paired."""
    y = np.asarray(y_true, int)
    s = np.asarray(scores, np.float64)
    counts = cls._counts(idx, len(y))
    out = cls._binary_from_counts(counts, y, (s >= threshold).astype(int))
    out = {"f1": out["f1"], "accuracy": out["accuracy"]}
    out["roc_auc"] = cls._auc_from_counts(counts, y, s)
    out["pr_auc"] = cls._ap_from_counts(counts, y, s)
    for name, spec in SPECIFICITIES.items():
        out[name] = _sens_at_spec_counts(counts, y, s, spec)
    out["brier"] = counts @ ((s - y) ** 2) / counts.sum(1)
    return out


def point_metrics(y_true, scores, threshold: float) -> dict[str, float]:
    """Every name in METRICS on the full test set."""
    b = cls.binary_metrics(y_true, scores, threshold)
    out = {k: float(b[k]) for k in ("f1", "roc_auc", "pr_auc", "accuracy")}
    for name, spec in SPECIFICITIES.items():
        out[name] = sensitivity_at_specificity(y_true, scores, spec)
    out["brier"] = brier_score(y_true, scores)
    return out


def threshold_stability(y_val, scores_val, num_boot: int = 200, seed: int = 0) -> dict:
    """How much the F1-optimal validation threshold moves when the validation split is
    resampled (stratified): {"threshold", "boot_median", "boot_ci95", "boot_sd",
    "val_positives"}. A wide interval means the validation split has too few tumour tiles to
    choose an operating point, and the F1 of every arm inherits that noise."""
    y = np.asarray(y_val, int)
    s = np.asarray(scores_val, np.float64)
    idx = cls.resample_indices(y, num_boot, seed, stratified=True)
    t = np.array([cls.choose_threshold(y[i], s[i]) for i in idx])
    return {
        "threshold": cls.choose_threshold(y, s),
        "boot_median": float(np.median(t)),
        "boot_ci95": [float(x) for x in np.quantile(t, [0.025, 0.975])],
        "boot_sd": float(t.std(ddof=1)),
        "val_positives": int(y.sum()),
    }
