"""Hierarchical bootstrap: intervals that cover every source of variation in a study arm.

An arm's metric varies with the generator's training seed, the classifier's seed given the
generator's images, and the test images. A bootstrap over test images alone (with seeds
averaged out) says nothing about a rerun with another generator seed — the largest source of
variance in the rare-tumour design (issue 19: the same config gave "significantly worse" and
"no difference" on two machines). So every replicate here resamples all three levels:

1. generator seeds, with replacement;
2. within each drawn generator seed, its classifier seeds, with replacement;
3. test images, with replacement (stratified by the caller), *the same indices for every arm*,
   so two arms stay paired on test images and Δ(arm − reference) keeps that pairing.

Levels 1–2 are cheap because a replicate is a weighted mean of per-run values: run (g, s) on
test resample b has metric D[r, b] (computed once per run, vectorised over b by the caller, e.g.
`jaxsynth.eval.operating.metric_draws`), and a replicate is Σ_r W[b, r] D[r, b] with W the
seed-draw weights. The sum of k independent multinomial(S, uniform) draws is a
multinomial(k·S, uniform), so W needs one multinomial per generator seed.

The variance split is a method-of-moments (one-way nested ANOVA) estimate on the full-test
point metrics plus the test-resampling variance of the seed-mean:
* generator: σ²_gen / G  (σ²_gen = var of generator means − mean within-variance / n_g),
* classifier: σ²_cls / (G·n̄)  (σ²_cls = pooled within-generator variance of seeds),
* test set: var over test resamples of the seed-mean (seeds fixed).
Each term is that source's contribution to the variance of the arm's reported mean.
"""

from __future__ import annotations

import numpy as np


def _groups(groups) -> tuple[np.ndarray, list[np.ndarray]]:
    g = np.asarray(groups)
    ids = list(dict.fromkeys(g.tolist()))  # order of first appearance
    return np.array(ids), [np.flatnonzero(g == i) for i in ids]


def seed_weights(groups, num_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(num_boot, R) weights of the R runs in each replicate; every row sums to 1.

    `groups[r]` is run r's generator seed. A replicate draws G generator seeds with replacement
    (each drawn copy weighs 1/G) and, per copy, its n_g classifier seeds with replacement."""
    _, members = _groups(groups)
    G = len(members)
    draws = rng.integers(0, G, (num_boot, G))
    k = (draws[:, :, None] == np.arange(G)).sum(1)  # (B, G) times each generator seed drawn
    w = np.zeros((num_boot, len(np.asarray(groups))))
    for j, idx in enumerate(members):
        n = len(idx)
        counts = rng.multinomial(k[:, j] * n, np.full(n, 1.0 / n))  # (B, n)
        w[:, idx] = counts / (G * n)
    return w


def grand_mean(values, groups) -> float:
    """Mean over generator seeds of the mean over their classifier seeds (each generator seed
    weighs the same, whatever its number of classifier seeds)."""
    v = np.asarray(values, np.float64)
    _, members = _groups(groups)
    return float(np.mean([v[idx].mean() for idx in members]))


def _uniform_weights(groups) -> np.ndarray:
    _, members = _groups(groups)
    w = np.zeros(len(np.asarray(groups)))
    for idx in members:
        w[idx] = 1.0 / (len(members) * len(idx))
    return w


def variance_split(point, groups, test_draws_of_mean, has_generator: bool = True) -> dict:
    """Each source's contribution to the variance of the arm's mean (see the module doc).

    `point`: (R,) full-test metric per run; `test_draws_of_mean`: (B,) the seed-mean on each
    test resample. A component that one seed level cannot estimate (one generator seed, or one
    classifier seed per generator) is NaN — never silently zero; an arm without a generator
    (`has_generator=False`: original, controls) has a generator component of exactly 0."""
    v = np.asarray(point, np.float64)
    _, members = _groups(groups)
    G = len(members)
    ns = np.array([len(i) for i in members])
    means = np.array([v[i].mean() for i in members])
    dof = int((ns - 1).sum())
    if dof > 0:
        var_cls = float(sum(((v[i] - v[i].mean()) ** 2).sum() for i in members) / dof)
    else:
        var_cls = float("nan")
    pooled = False  # one classifier seed per generator seed: the two levels are confounded
    if not has_generator:
        var_gen = 0.0
    elif G > 1 and np.isfinite(var_cls):
        var_gen = float(max(0.0, means.var(ddof=1) - var_cls * np.mean(1.0 / ns)))
    elif G > 1:
        var_gen, pooled = float(means.var(ddof=1)), True
    else:
        var_gen = float("nan")
    contrib = {
        "generator": var_gen / G,
        "classifier": var_cls * float(np.mean(1.0 / ns)) / G,
        "test_set": float(np.var(np.asarray(test_draws_of_mean, np.float64), ddof=1)),
    }
    finite = [c for c in contrib.values() if np.isfinite(c)]
    total = float(sum(finite))
    return {
        "components": {"generator": var_gen, "classifier": var_cls},
        "contribution": contrib,
        "share": {
            k: (c / total if total > 0 and np.isfinite(c) else float("nan"))
            for k, c in contrib.items()
        },
        # True: "generator" holds generator + classifier variance (not separable with one
        # classifier seed per generator seed) and "classifier" is NaN.
        "generator_includes_classifier": pooled,
        "generator_seeds": G,
        "classifier_seeds_per_generator": ns.tolist(),
    }


def hierarchical_bootstrap(
    draws, point, groups, *, seed: int = 0, level: float = 0.95, has_generator: bool = True
) -> dict:
    """Hierarchical percentile interval of one arm's metric.

    draws: (R, B) metric of run r on shared test resample b; point: (R,) metric of run r on the
    full test set; groups: (R,) generator seed of run r. Returns {"mean", "ci95", "replicates"
    (B,), "variance"}; pass two arms' results to `delta` for a paired Δ."""
    d = np.asarray(draws, np.float64)
    if d.ndim != 2 or d.shape[0] != len(np.asarray(groups)):
        raise ValueError(f"draws must be (runs, resamples), got {d.shape} for {len(groups)} runs")
    rng = np.random.default_rng(seed)
    w = seed_weights(groups, d.shape[1], rng)
    reps = np.einsum("br,rb->b", w, np.nan_to_num(d))
    a = (1 - level) / 2
    test_only = _uniform_weights(groups) @ d
    return {
        "mean": grand_mean(point, groups),
        "ci95": [float(x) for x in np.quantile(reps, [a, 1 - a])],
        "replicates": reps,
        "variance": variance_split(point, groups, test_only, has_generator),
        "test_only_draws": test_only,
    }


def delta(arm: dict, reference: dict, level: float = 0.95) -> dict:
    """Δ = arm − reference from two `hierarchical_bootstrap` results on the same test resamples.

    Seed levels were drawn independently per arm (different generators/classifiers), test images
    jointly (the same resample b in both). The two-sided p-value is twice the share of Δ
    replicates on the far side of 0 (capped at 1). The variance split adds both arms' seed
    contributions (independent) to the test-set variance of the paired Δ."""
    reps = np.asarray(arm["replicates"]) - np.asarray(reference["replicates"])
    a = (1 - level) / 2
    p = 2 * min(np.mean(reps <= 0), np.mean(reps >= 0))
    ca, cr = arm["variance"]["contribution"], reference["variance"]["contribution"]
    test = np.asarray(arm["test_only_draws"]) - np.asarray(reference["test_only_draws"])
    contrib = {
        "generator": ca["generator"] + cr["generator"],  # NaN if either is not estimable
        "classifier": ca["classifier"] + cr["classifier"],
        "test_set": float(np.var(test, ddof=1)),
    }
    return {
        "mean": float(arm["mean"] - reference["mean"]),
        "ci95": [float(x) for x in np.quantile(reps, [a, 1 - a])],
        "p_value": float(min(1.0, p)),
        "variance_contribution": {k: float(v) for k, v in contrib.items()},
    }


VERDICTS = ("better", "no evidence", "worse")


def verdict(delta_result: dict, higher_is_better: bool = True) -> str:
    """ "better" / "worse" when the Δ interval excludes 0 on that side, else "no evidence".

    Δ = arm − reference; for a lower-is-better metric (Brier) a negative Δ is "better". "No
    evidence" is not "no difference": the interval may still hold a large effect."""
    lo, hi = delta_result["ci95"]
    if lo > 0:
        return "better" if higher_is_better else "worse"
    if hi < 0:
        return "worse" if higher_is_better else "better"
    return "no evidence"
