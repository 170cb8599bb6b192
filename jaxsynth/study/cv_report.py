"""The pooled K-fold report: per-fold Δ, pooled Δ + verdict per arm, paper 004's t-test.

WHY pooled predictions (and not a fold level in the bootstrap): in K-fold CV every tile is
predicted exactly once, by models that never saw it, so the K test parts together are one test
set of the whole pool — K times the tumour tiles of one fold, which is what makes an AUPRC or F1
interval narrow enough to mean something. A pooled run is a (generator seed, classifier seed)
pair across all folds: its predictions are the K folds' predictions of that pair concatenated,
each tile classified at its own fold's validation threshold. The hierarchical bootstrap then
runs unchanged — generator seed → classifier seed → test image — with the test images resampled
within (fold, class) strata, so every replicate keeps each fold's size and prevalence; the unit
of replication is "the whole CV at one seed pair", which is what a rerun with other seeds
changes. A fold level in the bootstrap would resample 5 folds (or 2) — too few for a percentile
interval — and would treat the folds as exchangeable draws although they partition one pool.

Paper 004 compares arms with a t-test across folds, paired by fold (n = K); it is shown next
to the pooled interval, as in the single-split report, but the verdict is the interval's.
Arms that some fold could not train (e.g. the selective filter kept nothing) have no pooled
row; their per-fold results stay in that fold's report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxsynth.eval import classification as cls
from jaxsynth.eval import hierarchical as hb
from jaxsynth.eval import operating as op
from jaxsynth.study import forest, provenance, verdicts
from jaxsynth.study.cv_markdown import cv_markdown
from jaxsynth.study.report import dump_json

CV_OUTPUTS = ("results.json", "report.md", "figures")


def pooled_runs(folds: list[dict]) -> tuple[dict[str, list[dict]], list[str]]:
    """(arm -> pooled runs, arms missing from some fold). A pooled run concatenates, in fold
    order, the test probabilities of one (generator seed, classifier seed) pair of every fold;
    `threshold` is per tile (its fold's validation threshold)."""
    arms: list[str] = []
    for f in folds:  # every arm trained or skipped in some fold
        arms += [a for a in (*f["runs"], *f["skipped_arms"]) if a not in arms]
    pooled, missing = {}, []
    for arm in arms:
        if not all(arm in f["runs"] for f in folds):
            missing.append(arm)
            continue
        keyed = [{(r.get("generator_seed"), r["seed"]): r for r in f["runs"][arm]} for f in folds]
        pairs = [p for p in keyed[0] if all(p in kd for kd in keyed)]
        pooled[arm] = [
            {
                "generator_seed": g,
                "seed": s,
                "test_probs": np.concatenate(
                    [np.asarray(kd[(g, s)]["test_probs"]) for kd in keyed]
                ),
                "threshold": np.concatenate(
                    [
                        np.full(len(kd[(g, s)]["test_probs"]), kd[(g, s)]["threshold"])
                        for kd in keyed
                    ]
                ),
                "fold_thresholds": [float(kd[(g, s)]["threshold"]) for kd in keyed],
            }
            for g, s in pairs
        ]
    return pooled, missing


def pooled_arms(
    runs: dict[str, list[dict]], labels, strata, *, n_boot: int, seed: int, primary: str
) -> dict[str, dict]:
    """`verdicts.hierarchical_arms` for pooled runs: per-tile thresholds, test images resampled
    within `strata` (fold × class). With one fold and scalar thresholds it gives the same
    numbers as `hierarchical_arms` (tested)."""
    y = np.asarray(labels, int)
    idx = cls.resample_indices(np.asarray(strata), n_boot, seed, stratified=True)
    whole = np.arange(len(y))[None]  # the full test set as one "resample": the point metrics
    per_arm, points_of = {}, {}
    for arm, arm_runs in runs.items():
        groups = np.array([r.get("generator_seed") or 0 for r in arm_runs])
        has_gen = any(r.get("generator_seed") is not None for r in arm_runs)
        draws, points = [], []
        for r in arm_runs:
            s, t = np.asarray(r["test_probs"], np.float64), np.asarray(r["threshold"])
            draws.append(op.metric_draws(y, s, t, idx))
            points.append({m: float(v[0]) for m, v in op.metric_draws(y, s, t, whole).items()})
        points_of[arm] = [(r["seed"], p) for r, p in zip(arm_runs, points)]
        per_arm[arm] = {
            m: hb.hierarchical_bootstrap(
                np.stack([d[m] for d in draws]),
                np.array([p[m] for p in points]),
                groups,
                seed=verdicts.arm_seed(seed, arm),
                has_generator=has_gen,
            )
            for m in op.METRICS
        }
    out = {}
    for arm, res in per_arm.items():
        entry = {
            "metrics": {
                m: {"mean": r["mean"], "ci95": r["ci95"], "variance": r["variance"]}
                for m, r in res.items()
            },
            "runs": [[r.get("generator_seed"), r["seed"]] for r in runs[arm]],
            "fold_thresholds": [r.get("fold_thresholds") for r in runs[arm]],
            "vs": {},
        }
        for ref in verdicts.references(arm, list(runs)):
            entry["vs"][ref] = {
                m: {
                    **(d := hb.delta(res[m], per_arm[ref][m])),
                    "verdict": hb.verdict(d, higher),
                    "t_test": verdicts.paired_t_test(points_of[arm], points_of[ref], m),
                }
                for m, higher in op.METRICS.items()
            }
        entry["verdict"] = verdicts.verdict_line(arm, entry["vs"], primary)
        out[arm] = entry
    return out


def across_folds_t_test(fold_h: list[dict], arm: str, ref: str, metric: str) -> dict:
    """Paper 004's paired t-test across folds: each fold's mean metric (over its runs) of `arm`
    vs `ref`, paired by fold (n = K)."""
    from scipy import stats

    def means(name):  # results.json holds a non-finite mean as null
        return np.array(
            [np.nan if (v := h[name]["metrics"][metric]["mean"]) is None else v for h in fold_h]
        )

    a, b = means(arm), means(ref)
    diff = a - b
    if len(diff) < 2 or not np.all(np.isfinite(diff)):
        return {"n": len(diff), "t": None, "p": None, "mean_diff": None}
    mean = float(diff.mean())
    if np.all(diff == diff[0]):
        return {"n": len(diff), "t": None, "p": 1.0 if diff[0] == 0 else 0.0, "mean_diff": mean}
    res = stats.ttest_rel(a, b)
    return {"n": len(diff), "t": float(res.statistic), "p": float(res.pvalue), "mean_diff": mean}


def per_fold_deltas(fold_h: list[dict], pooled: dict[str, dict]) -> dict:
    """arm -> ref -> metric -> {"folds": [each fold's Δ, interval, verdict], "t_test_folds"}."""
    out: dict = {}
    for arm, entry in pooled.items():
        for ref in entry["vs"]:
            if not all(arm in h and ref in h[arm]["vs"] for h in fold_h):
                continue
            out.setdefault(arm, {})[ref] = {
                m: {
                    "folds": [
                        {k: h[arm]["vs"][ref][m][k] for k in ("mean", "ci95", "verdict")}
                        for h in fold_h
                    ],
                    "t_test_folds": across_folds_t_test(fold_h, arm, ref, m),
                }
                for m in op.METRICS
            }
    return out


def cv_report_stage(folds: list[dict]):
    """The pooled stage's function over the finished folds (`folds.fold_outputs`)."""

    def fn(ctx) -> dict:
        study = ctx.config
        primary = study.study.verdict_metric
        k = len(folds)
        labels, strata = [], []
        for f in folds:
            manifest = json.loads((Path(f["split_dir"]) / "manifest.json").read_text())
            y = [e["label"] for e in manifest["splits"]["test"]]
            labels += y
            strata += [f["fold"] * len(manifest["class_names"]) + lb for lb in y]
        fold_h = [
            json.loads((Path(f["report_dir"]) / "results.json").read_text())["hierarchical"]
            for f in folds
        ]
        runs, missing = pooled_runs(folds)
        pooled = pooled_arms(
            runs, labels, strata, n_boot=study.eval.bootstrap, seed=study.seed, primary=primary
        )
        per_fold = per_fold_deltas(fold_h, pooled)
        fig_dir = ctx.dir / "figures"
        forest.forest_plot(pooled, fig_dir / "forest.png")
        prov = provenance.provenance(study)
        cv = {
            "num_folds": k,
            "design": "pooled predictions; hierarchical bootstrap within (fold, class) strata",
            "folds": [
                {"fold": f["fold"], "workdir": f["workdir"], "counts": f["split"]["counts"]}
                for f in folds
            ],
            "pool": folds[0]["split"]["cv"]["pool"],
            "test_tiles": len(labels),
            "missing_arms": {a: _why_missing(folds, a) for a in missing},
            "per_fold": per_fold,
        }
        results = {
            "config": json.loads(study.to_json_best_effort()),
            "cv": cv,
            "verdicts": {a: v["verdict"] for a, v in pooled.items()},
            "verdict_metric": primary,
            "hierarchical": pooled,
            "provenance": prov,
        }
        dump_json(results, ctx.dir / "results.json")
        (ctx.dir / "report.md").write_text(cv_markdown(study, cv, pooled, prov))
        lines = "\n".join(f"  {v['verdict']}" for v in pooled.values())
        return {"console_table": f"K-fold CV, K = {k}; pooled verdicts:\n{lines}", "folds": k}

    return fn


def _why_missing(folds: list[dict], arm: str) -> dict[str, str]:
    return {
        f"fold_{f['fold']}": f["skipped_arms"].get(arm, "not trained")
        for f in folds
        if arm not in f["runs"]
    }
