"""report.md of a K-fold study: the design, the folds, the pooled verdicts, Δ per fold and pooled
next to paper 004's t-test across folds, the pooled metrics, provenance."""

from __future__ import annotations

import numpy as np

from jaxsynth.eval import operating as op
from jaxsynth.study.report_verdicts import provenance_markdown
from jaxsynth.study.verdicts import LABELS

TABLE_METRICS = ("pr_auc", "f1", "roc_auc")  # the Δ tables (the verdict metric first)


def _ci(d: dict) -> str:
    if d["mean"] is None or None in d["ci95"] or not np.isfinite([d["mean"], *d["ci95"]]).all():
        return "–"
    return f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def _p(t: dict) -> str:
    return "–" if t["p"] is None else f"{t['p']:.3f}"


def cv_markdown(study, cv: dict, pooled: dict[str, dict], prov: dict) -> str:
    k = cv["num_folds"]
    names = list(study.data.classes)
    names = [c.split(":")[-1] for c in names]
    primary = study.study.verdict_metric
    simulated = study.data.source == "phantom"
    lines = [
        f"# Rare-tumour study report: K-fold CV, K = {k}",
        "",
        f"Source: `{study.data.source}`"
        + (" (**simulated** H&E phantom — not real tissue)" if simulated else "")
        + f", {study.image_size} px, seed {study.seed}. Pool (test + val + train counts of "
        "`data.split`): "
        + ", ".join(f"{cv['pool'][c]} {c}" for c in names if c in cv["pool"])
        + f", partitioned into {k} stratified folds. Fold k's test part is fold k (real tiles "
        "only, fixed before any of fold k's generators saw data); its validation and training "
        "parts come from the other folds in the configured proportions. Every stage ran once "
        f"per fold (cost: {k} × the single-split study); each fold's full report is "
        "`fold_<k>/report.md`.",
        "",
        "| fold | "
        + " | ".join(f"{s} ({'/'.join(names)})" for s in ("test", "val", "train"))
        + " |",
        "|---|---|---|---|",
    ]
    for f in cv["folds"]:
        c = f["counts"]
        cells = ["/".join(str(v) for v in c[s]) for s in ("test", "val", "train")]
        lines.append(f"| [{f['fold']}]({f['workdir']}/report.md) | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Verdicts (K-fold CV, K = {k}, pooled predictions)",
        "",
        f"Every pool tile is predicted once, by the models of the fold whose test part holds it "
        f"({cv['test_tiles']} test tiles pooled), at its fold's validation threshold. 95 % "
        "intervals: hierarchical bootstrap over generator seeds → classifier seeds → test images "
        "(resampled within each fold and class, the same resamples for every arm). Verdict on "
        f"{LABELS[primary]}: *better*/*worse* when the pooled Δ interval excludes 0. Paper "
        "004's t-test across folds (paired by fold, n = K, on each fold's mean over runs) is "
        "shown next to it; it ignores test-set sampling and is not used for the verdict.",
        "",
        *(
            [
                "With one generator seed the generator's training variance is **not** in these "
                "intervals; use more `study.generator_seeds` (`:rigorous`)."
            ]
            if len(list(study.study.generator_seeds)) < 2
            else []
        ),
        "",
        *[f"- {a['verdict']}" for a in pooled.values()],
        "",
    ]
    for arm, why in cv["missing_arms"].items():
        reasons = "; ".join(f"{f}: {w}" for f, w in why.items())
        lines += [f"Arm `{arm}` has no pooled row (not trained in every fold): {reasons}.", ""]
    for m in TABLE_METRICS if primary in TABLE_METRICS else (primary, *TABLE_METRICS):
        lines += _delta_table(m, k, pooled, cv["per_fold"])
    lines += [
        "## Pooled metrics per arm",
        "",
        "| arm | " + " | ".join(LABELS[m] for m in op.METRICS) + " |",
        "|---|" + "---|" * len(op.METRICS),
    ]
    for arm, a in pooled.items():
        ms = a["metrics"]
        cells = [
            f"{ms[m]['mean']:.3f} [{ms[m]['ci95'][0]:.3f}, {ms[m]['ci95'][1]:.3f}]"
            if np.isfinite(ms[m]["mean"])
            else "–"
            for m in op.METRICS
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "![Forest plot of pooled Δ vs original](figures/forest.png)", ""]
    return "\n".join(lines) + "\n" + provenance_markdown(prov)


def _delta_table(metric: str, k: int, pooled: dict, per_fold: dict) -> list[str]:
    label = LABELS[metric]
    head = " | ".join(f"fold {i} Δ{label} [95% CI]" for i in range(k))
    lines = [
        f"## Δ{label}: per fold and pooled",
        "",
        f"| arm | vs | {head} | pooled Δ{label} [95% CI] | verdict | t-test across folds p (n) |",
        "|---|---|" + "---|" * k + "---|---|---|",
    ]
    for arm, a in pooled.items():
        for ref, comp in a["vs"].items():
            pf = per_fold.get(arm, {}).get(ref, {}).get(metric)
            folds = [_ci(d) for d in pf["folds"]] if pf else ["–"] * k
            t = pf["t_test_folds"] if pf else {"p": None, "n": 0}
            lines.append(
                f"| {arm} | {ref} | "
                + " | ".join(folds)
                + f" | {_ci(comp[metric])} | {comp[metric]['verdict']} | {_p(t)} ({t['n']}) |"
            )
    return lines + [""]
