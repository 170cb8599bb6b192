"""Verdicts per arm from hierarchical intervals: "better / no evidence / worse than original".

Every (arm, generator seed, classifier seed) run gives test probabilities and a validation
threshold. Here each run is scored on the same stratified test resamples (arms paired on test
images), the hierarchical bootstrap (`jaxsynth.eval.hierarchical`) adds the generator- and
classifier-seed levels, and each arm's Δ against its references (the original arm, and for a
generator arm its matched classical-augmentation control) decides the verdict. A verdict that
survives a rerun must come from an interval that covers everything that varies in a rerun.
"""

from __future__ import annotations

import zlib

import numpy as np

from jaxsynth.eval import classification as cls
from jaxsynth.eval import hierarchical as hb
from jaxsynth.eval import operating as op

LABELS = {
    "f1": "F1",
    "roc_auc": "AUC",
    "pr_auc": "AUPRC",
    "sens_at_spec90": "sens@90%spec",
    "sens_at_spec95": "sens@95%spec",
    "brier": "Brier",
    "accuracy": "accuracy",
}
CONTROL_SUFFIXES = ("_classical", "_oversample")


def references(arm: str, arms: list[str]) -> list[str]:
    """The arms `arm` is judged against: `original`, and for a generator arm (`<gen>`,
    `<gen>_selective`, `<gen>_synthetic_only`) its matched `<gen>_classical` control."""
    if arm == "original":
        return []
    refs = ["original"] if "original" in arms else []
    if arm.endswith(CONTROL_SUFFIXES):
        return refs
    gen = arm.removesuffix("_synthetic_only").removesuffix("_selective")
    if f"{gen}_classical" in arms:
        refs.append(f"{gen}_classical")
    return refs


def arm_seed(seed: int, arm: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(arm.encode())) % (1 << 31)


def hierarchical_arms(
    runs: dict[str, list[dict]],
    labels,
    *,
    n_boot: int,
    seed: int = 0,
    primary: str = "pr_auc",
    refs: dict[str, list[str]] | None = None,
) -> dict[str, dict]:
    """Per arm: every metric's hierarchical mean/interval/variance split, Δ and verdict against
    each reference, and a one-line verdict on the `primary` metric.

    `runs[arm]` is a list of run dicts with "test_probs", "threshold", "seed" and (for arms fed
    by a generator) "generator_seed". `refs` maps an arm to the arms it is judged against
    (default: the study's `references`), for designs other than the study's, e.g. a
    domain-shift experiment whose arms are compared with the shifted baseline."""
    if primary not in op.METRICS:
        raise ValueError(f"verdict metric '{primary}' is not one of {', '.join(op.METRICS)}")
    y = np.asarray(labels, int)
    idx = cls.resample_indices(y, n_boot, seed, stratified=True)
    per_arm: dict[str, dict] = {}
    points_of: dict[str, list] = {}  # (classifier seed, point metrics) per run: the t-tests
    for arm, arm_runs in runs.items():
        groups = np.array([r.get("generator_seed") or 0 for r in arm_runs])
        has_gen = any(r.get("generator_seed") is not None for r in arm_runs)
        draws = [
            op.metric_draws(y, np.asarray(r["test_probs"]), r["threshold"], idx) for r in arm_runs
        ]
        points = [
            op.point_metrics(y, np.asarray(r["test_probs"]), r["threshold"]) for r in arm_runs
        ]
        points_of[arm] = [(r["seed"], pt) for r, pt in zip(arm_runs, points, strict=True)]
        per_arm[arm] = {
            m: hb.hierarchical_bootstrap(
                np.stack([d[m] for d in draws]),
                np.array([p[m] for p in points]),
                groups,
                seed=arm_seed(seed, arm),
                has_generator=has_gen,
            )
            for m in op.METRICS
        }
    out: dict[str, dict] = {}
    names = list(runs)
    for arm in names:
        res = per_arm[arm]
        entry = {
            "metrics": {
                m: {"mean": r["mean"], "ci95": r["ci95"], "variance": r["variance"]}
                for m, r in res.items()
            },
            "runs": [[r.get("generator_seed"), r["seed"]] for r in runs[arm]],
            "thresholds": [float(r["threshold"]) for r in runs[arm]],
            "vs": {},
        }
        for ref in references(arm, names) if refs is None else refs.get(arm, []):
            comp = {}
            for m, higher in op.METRICS.items():
                d = hb.delta(res[m], per_arm[ref][m])
                comp[m] = {
                    **d,
                    "verdict": hb.verdict(d, higher),
                    "t_test": paired_t_test(points_of[arm], points_of[ref], m),
                }
            entry["vs"][ref] = comp
        entry["verdict"] = verdict_line(arm, entry["vs"], primary)
        out[arm] = entry
    return out


def paired_t_test(arm_points, ref_points, metric: str) -> dict:
    """Paper 004's paired t-test over runs, arm vs reference, on one metric.

    Runs are paired by classifier seed (the arms share each seed's initialisation and data
    order); an arm's generator seeds are averaged within a pair, so n = the number of classifier
    seeds both arms have. Reported because the paper reports it: it sees only run-to-run
    variation, not test-set sampling, so the verdicts come from the hierarchical interval.
    `*_points` are (classifier seed, point metrics) pairs."""
    from scipy import stats

    def by_seed(points):
        acc: dict[int, list[float]] = {}
        for seed, m in points:
            acc.setdefault(int(seed), []).append(float(m[metric]))
        return {k: float(np.mean(v)) for k, v in acc.items()}

    a, b = by_seed(arm_points), by_seed(ref_points)
    seeds = sorted(set(a) & set(b))
    diff = np.array([a[k] - b[k] for k in seeds])
    if len(seeds) < 2 or not np.all(np.isfinite(diff)):
        return {"n": len(seeds), "t": None, "p": None}
    if np.all(diff == diff[0]):  # no spread: t is ±inf (or undefined for 0)
        return {"n": len(seeds), "t": None, "p": 1.0 if diff[0] == 0 else 0.0}
    res = stats.ttest_rel([a[k] for k in seeds], [b[k] for k in seeds])
    return {"n": len(seeds), "t": float(res.statistic), "p": float(res.pvalue)}


def verdict_line(arm: str, vs: dict[str, dict], metric: str) -> str:
    """e.g. "dcgan: no evidence vs original (ΔAUPRC +0.012 [-0.020, +0.041]); worse than
    dcgan_classical (ΔAUPRC -0.034 [-0.060, -0.008])"."""
    if not vs:
        return f"{arm}: reference arm"
    parts = []
    for ref, comp in vs.items():
        d = comp[metric]
        word = {"better": "better than", "worse": "worse than", "no evidence": "no evidence vs"}
        parts.append(
            f"{word[d['verdict']]} {ref} (Δ{LABELS[metric]} {d['mean']:+.3f} "
            f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}])"
        )
    return f"{arm}: " + "; ".join(parts)


def markdown_section(arms: dict[str, dict], primary: str, n_boot: int, gen_seeds) -> str:
    """The report's verdict block: one line per arm, the Δ table, and the variance split."""
    lines = [
        "## Verdicts (hierarchical intervals)",
        "",
        f"95 % intervals from a hierarchical bootstrap ({n_boot} replicates): generator seeds "
        f"{list(gen_seeds)} → classifier seeds → test images (resampled jointly across arms, so "
        "Δs are paired on test images). Verdict on "
        f"{LABELS[primary]}: *better*/*worse* when the Δ interval excludes 0, else *no evidence*. "
        "The last column is paper 004's paired t-test over runs (pairs = classifier seeds, "
        "generator seeds averaged within a pair): it ignores test-set sampling and is shown for "
        "comparison with the paper, not used for the verdict.",
    ]
    if len(list(gen_seeds)) < 2:
        lines.append(
            "With one generator seed the generator's training variance is **not** in these "
            "intervals (the variance split shows it as –); use the `:rigorous` variant."
        )
    lines += ["", *[f"- {a['verdict']}" for a in arms.values()], ""]
    lines += [
        "| arm | vs | ΔF1 [95% CI] | ΔAUPRC [95% CI] | ΔAUC [95% CI] | Δsens@95%spec | ΔBrier "
        f"| verdict | paired t-test p, {LABELS[primary]} / F1 (n) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    f = lambda d: f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"  # noqa: E731
    _t = lambda d: "–" if d["t_test"]["p"] is None else f"{d['t_test']['p']:.3f}"  # noqa: E731
    for arm, a in arms.items():
        for ref, comp in a["vs"].items():
            lines.append(
                f"| {arm} | {ref} | {f(comp['f1'])} | {f(comp['pr_auc'])} | "
                f"{f(comp['roc_auc'])} | {f(comp['sens_at_spec95'])} | {f(comp['brier'])} | "
                f"{comp[primary]['verdict']} | {_t(comp[primary])} / {_t(comp['f1'])} "
                f"({comp['f1']['t_test']['n']}) |"
            )
    lines += [
        "",
        f"Variance split of each arm's mean {LABELS[primary]} (each source's contribution to "
        "the variance of the reported mean; share of the total):",
        "",
        "| arm | generator | classifier | test set |",
        "|---|---:|---:|---:|",
    ]
    for arm, a in arms.items():
        v = a["metrics"][primary]["variance"]
        cells = []
        for k in ("generator", "classifier", "test_set"):
            c, s = v["contribution"][k], v["share"][k]
            mark = " †" if k == "generator" and v.get("generator_includes_classifier") else ""
            cells.append("–" if not np.isfinite(c) else f"{c:.2e} ({s:.0%}){mark}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "– : not estimable with these seeds (one generator seed, or one classifier seed); "
        "† : generator and classifier variance together (one classifier seed per generator).",
    ]
    lines += [
        "",
        "| arm | " + " | ".join(LABELS[m] for m in op.METRICS) + " |",
        "|---|" + "---|" * len(op.METRICS),
    ]
    for arm, a in arms.items():
        ms = a["metrics"]
        lines.append(
            f"| {arm} | "
            + " | ".join(
                f"{ms[m]['mean']:.3f} [{ms[m]['ci95'][0]:.3f}, {ms[m]['ci95'][1]:.3f}]"
                for m in op.METRICS
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
