"""The reader-study statistics, as small pure functions over counts (tested against references).

- `accuracy_summary`: papers 003's "% real called real" / "% synthetic called synthetic" plus the
  overall accuracy with an exact two-sided binomial test against chance (p = 0.5) and an exact
  (Clopper-Pearson) 95 % interval, via `scipy.stats.binomtest`. An accuracy near 50 % with a large
  p-value is what "raters cannot tell them apart" means; the pooled test treats every answer as
  independent, which overstates the evidence when raters agree, hence Fleiss' kappa beside it.
- `fleiss_kappa`: agreement of a fixed number of raters per image beyond chance (Fleiss 1971).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (images, categories) matrix of how many raters chose each category.

    Every row must sum to the same number of raters n >= 2. Returns nan when chance agreement is
    1 (every answer in one category), where kappa is undefined.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] < 1:
        raise ValueError(f"counts must be (images, categories), got shape {counts.shape}")
    n = counts.sum(axis=1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("every image needs the same number (>= 2) of ratings")
    n = n[0]
    p_cat = counts.sum(axis=0) / counts.sum()
    agreement = (np.sum(counts * counts, axis=1) - n) / (n * (n - 1))
    p_bar = agreement.mean()
    p_e = float(np.sum(p_cat * p_cat))
    if math.isclose(p_e, 1.0):
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def _pct(k: int, n: int) -> float | None:
    return None if n == 0 else 100.0 * k / n


def accuracy_summary(
    real_called_real: int, num_real: int, synth_called_synth: int, num_synth: int
) -> dict:
    """Percentages per origin and the overall accuracy with its binomial test against 50 %."""
    correct, total = real_called_real + synth_called_synth, num_real + num_synth
    out = {
        "real": {
            "n": num_real,
            "called_real": real_called_real,
            "pct_called_real": _pct(real_called_real, num_real),
        },
        "synthetic": {
            "n": num_synth,
            "called_synthetic": synth_called_synth,
            "pct_called_synthetic": _pct(synth_called_synth, num_synth),
        },
        "accuracy": {"correct": correct, "n": total, "pct": _pct(correct, total)},
    }
    if total:
        test = stats.binomtest(correct, total, p=0.5, alternative="two-sided")
        ci = test.proportion_ci(confidence_level=0.95, method="exact")
        out["accuracy"].update(
            p_value=float(test.pvalue), ci95_pct=[100.0 * ci.low, 100.0 * ci.high]
        )
    else:
        out["accuracy"].update(p_value=None, ci95_pct=None)
    return out


def mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def pearson(x: list[float], y: list[float]) -> dict:
    """Pearson r and its two-sided p-value; r is None (with a reason) when it is undefined."""
    n = len(x)
    if n < 3:
        return {"r": None, "p_value": None, "n": n, "note": "needs at least 3 images"}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {
            "r": None,
            "p_value": None,
            "n": n,
            "note": "a constant variable has no correlation",
        }
    res = stats.pearsonr(np.asarray(x, np.float64), np.asarray(y, np.float64))
    return {"r": float(res.statistic), "p_value": float(res.pvalue), "n": n}
