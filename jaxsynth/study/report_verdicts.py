"""The verdict part of the study report: hierarchical intervals, verdicts, forest plot,
threshold stability and provenance — added to results.json and report.md by the report stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxsynth.eval import operating as op
from jaxsynth.study import forest, provenance, verdicts


def threshold_summary(runs: dict[str, list[dict]], val_labels, n_boot: int, seed: int) -> dict:
    """Per arm: the validation-chosen thresholds of its runs and how far each would move under
    a bootstrap of the validation split (median over runs of the 95 % range width)."""
    out = {}
    for arm, arm_runs in runs.items():
        stab = [
            op.threshold_stability(val_labels, np.asarray(r["val_probs"]), n_boot, seed)
            for r in arm_runs
        ]
        out[arm] = {
            "thresholds": [s["threshold"] for s in stab],
            "boot_ci95": [s["boot_ci95"] for s in stab],
            "median_ci95_width": float(
                np.median([s["boot_ci95"][1] - s["boot_ci95"][0] for s in stab])
            ),
            "val_positives": stab[0]["val_positives"] if stab else 0,
        }
    return out


def verdict_report(study, runs: dict[str, list[dict]], split, fig_dir: Path) -> tuple[dict, str]:
    """(results.json additions, report.md section)."""
    primary = study.study.verdict_metric
    judged = verdicts.hierarchical_arms(
        runs, split.test.labels, n_boot=study.eval.bootstrap, seed=study.seed, primary=primary
    )
    forest.forest_plot(judged, fig_dir / "forest.png")
    thr = threshold_summary(runs, split.val.labels, study.study.threshold_bootstrap, study.seed)
    md = verdicts.markdown_section(
        judged, primary, study.eval.bootstrap, study.study.generator_seeds
    )
    md += "\n![Forest plot of Δ vs original](figures/forest.png)\n\n"
    md += threshold_markdown(thr)
    prov = provenance.provenance(study)
    md += provenance_markdown(prov)
    extra = {
        "verdicts": {a: v["verdict"] for a, v in judged.items()},
        "verdict_metric": primary,
        "hierarchical": judged,
        "threshold_stability": thr,
        "provenance": prov,
    }
    return extra, md


def threshold_markdown(thr: dict) -> str:
    lines = [
        "## Threshold stability",
        "",
        "F1 uses a threshold chosen on the validation split. Resampling the validation split "
        "shows how far that choice moves: a wide range means too few validation tumour tiles "
        "to fix an operating point (AUPRC, AUC and the Brier score need no threshold).",
        "",
        "| arm | val tumour tiles | thresholds chosen (per run) | median 95 % range width |",
        "|---|---:|---|---:|",
    ]
    for arm, t in thr.items():
        chosen = ", ".join(f"{x:.2f}" for x in t["thresholds"])
        lines.append(f"| {arm} | {t['val_positives']} | {chosen} | {t['median_ci95_width']:.2f} |")
    return "\n".join(lines) + "\n\n"


def provenance_markdown(prov: dict) -> str:
    m, lib, s = prov["machine"], prov["libraries"], prov["seeds"]
    return (
        "## Provenance\n\n"
        f"Machine: {m['platform']}, {m['cpu_count']} CPUs, jax backend `{m['jax_backend']}` "
        f"({', '.join(m['devices'])}); Python {m['python']}.\n\n"
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in lib.items()) + ".\n\n"
        f"Seeds: study {s['study_seed']}, generator seeds {s['generator_seeds']}, classifier "
        f"seeds {s['classifier_seeds']}, bootstrap {s['bootstrap_seed']}.\n"
    )
