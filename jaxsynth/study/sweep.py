"""`jaxsynth sweep`: the synthetic-ratio study (paper 002; the card's scaling studies).

For each generator and each synthetic fraction f of the minority class, a classifier arm is
trained × seeds and scored on the real-only test split, sharing the split, generator and
original-arm stages (and their cache) with `jaxsynth run`.

Two designs (`sweep.mode`):
* `add` (paper 002): keep every real minority image and add s synthetic ones so that
  s / (real + s) = f; f = 1 means synthetic minority only (all real minority images dropped,
  as many synthetic images as the largest added set).
* `replace`: hold the minority count at the real count n and replace a fraction f of it with
  synthetic images — separates "more data" from "synthetic data".

Outputs: `sweep.json`, `sweep.csv`, `sweep.md` and `figures/ratio_sweep.png` (tumour F1 and
ROC AUC vs f, 95 % CI bands).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import ml_collections
import numpy as np

from jaxsynth.errors import UserError
from jaxsynth.study import arms as arms_lib
from jaxsynth.study.arm_group import ArmGroup
from jaxsynth.study.common import (
    classifier_seeds,
    generator_seeds,
    gsuffix,
    minority_label,
    study_split,
)
from jaxsynth.study.generators import enabled_generators, filtered_synthetic
from jaxsynth.study.rare_tumour import classifier_stage, foundation_stages, run_stages
from jaxsynth.study.stages import ALL_KEYS, Stage

SWEEP_OUTPUTS = ("sweep.json", "sweep.csv", "sweep.md", "figures")


def synthetic_needed(n_real: int, fraction: float, mode: str, max_fraction: float) -> int:
    """How many synthetic images the point (fraction, mode) uses."""
    if mode == "replace":
        return int(round(fraction * n_real))
    if fraction >= 1.0:  # synthetic only: as many as the largest "add" point below 1
        below = max_fraction if max_fraction < 1.0 else 0.0
        return max(n_real, int(round(n_real * below / (1 - below)))) if below else n_real
    return int(round(n_real * fraction / (1 - fraction)))


def ratio_arm(
    split,
    synthetic: np.ndarray,
    gen: str,
    minority: int,
    fraction: float,
    mode: str,
    max_fraction: float,
    seed: int,
) -> arms_lib.ArmData | str:
    n_real = int((split.train.labels == minority).sum())
    need = synthetic_needed(n_real, fraction, mode, max_fraction)
    if need > len(synthetic):
        return (
            f"fraction {fraction:.2f} ({mode}) needs {need} synthetic images; "
            f"{len(synthetic)} survived the filter (raise synthetic.num)"
        )
    rng = np.random.default_rng(seed)
    if mode == "replace":
        return arms_lib.mix_arm(split, gen, synthetic, minority, fraction, rng)
    chosen = synthetic[rng.permutation(len(synthetic))[:need]]
    arm = arms_lib.augmented_arm(split, gen, chosen, minority, synthetic_only=fraction >= 1.0)
    arm.name = f"{gen}@{fraction:.2f}"
    return arm


def _point_name(gen: str, fraction: float) -> str:
    return f"{gen}@{int(round(fraction * 100)):03d}"


def build_sweep_stages(config: ml_collections.ConfigDict) -> list[Stage]:
    fractions = [float(f) for f in config.sweep.fractions]
    if any(not 0.0 < f <= 1.0 for f in fractions):
        raise UserError("sweep.fractions: every fraction must be in (0, 1]")
    mode = config.sweep.mode
    if mode not in ("add", "replace"):
        raise UserError(f"sweep.mode='{mode}': expected 'add' or 'replace'")
    max_below_one = max([f for f in fractions if f < 1.0], default=0.0)
    seeds = classifier_seeds(config)
    gens = enabled_generators(config)
    stages = foundation_stages(config)
    k0 = generator_seeds(config)[0]  # the sweep uses the first generator seed's samples
    group = ArmGroup()  # every fraction × seed of every generator trains as one program
    for g in gens:
        for f in fractions:
            for s in seeds:
                stages.append(
                    classifier_stage(
                        _point_name(g, f),
                        s,
                        _builder(g, k0, f, mode, max_below_one, s),
                        inputs=("split", f"synth_{g}{gsuffix(k0)}"),
                        extra_keys=("sweep.mode",),
                        group=group,
                    )
                )
    arm_names = [st.name for st in stages if st.name.startswith("arm_")]
    stages.append(
        Stage(
            "sweep_report",
            sweep_report_stage(gens, fractions),
            config_keys=(ALL_KEYS,),  # sweep.md records the setup
            inputs=("split", *arm_names),
            outputs=SWEEP_OUTPUTS,
        )
    )
    return stages


def _builder(gen: str, gseed: int, fraction: float, mode: str, max_below_one: float, seed: int):
    def build(split, ctx):
        syn = filtered_synthetic(ctx, gen, gseed)
        return ratio_arm(
            split,
            syn,
            gen,
            minority_label(ctx.config, split),
            fraction,
            mode,
            max_below_one,
            seed,
        )

    return build


def sweep_report_stage(gens: list[str], fractions: list[float]):
    def fn(ctx):
        from jaxsynth.study import plots
        from jaxsynth.study.report import aggregate_arms

        study = ctx.config
        split = study_split(ctx)
        runs: dict[str, list[dict]] = {}
        skipped: dict[str, str] = {}
        for name in ctx.stage.inputs:
            if not name.startswith("arm_"):
                continue
            res = ctx.results[name]
            if "skipped" in res:
                skipped[res["arm"]] = res["skipped"]
            else:
                runs.setdefault(res["arm"], []).append(res)
        arms = aggregate_arms(runs, split.test.labels, n_boot=study.eval.bootstrap, seed=study.seed)
        curves = {}
        rows = []
        for g in gens:
            xs, ms = [0.0], [arms["original"]["metrics"]]
            for f in fractions:
                name = _point_name(g, f)
                if name in arms:
                    xs.append(f)
                    ms.append(arms[name]["metrics"])
            curves[g] = {"fraction": xs, "metrics": ms}
            for x, m in zip(xs, ms):
                name = "original" if x == 0.0 else _point_name(g, x)
                vs = arms[name].get("vs_original", {})
                rows.append(
                    {
                        "generator": g,
                        "fraction": x,
                        "synthetic": arms[name]["counts"]["synthetic"],
                        "real_minority": arms[name]["counts"]["minority"]
                        - arms[name]["counts"]["synthetic"],
                        **{f"{k}_mean": m[k]["mean"] for k in ("f1", "roc_auc", "accuracy")},
                        **{f"{k}_ci_low": m[k]["ci95"][0] for k in ("f1", "roc_auc", "accuracy")},
                        **{f"{k}_ci_high": m[k]["ci95"][1] for k in ("f1", "roc_auc", "accuracy")},
                        "p_delta_f1": vs.get("delta_f1", {}).get("p_paired_bootstrap"),
                        "p_delta_auc": vs.get("delta_roc_auc", {}).get("p_paired_bootstrap"),
                    }
                )
        out = ctx.dir  # published into the workdir by the runner
        (out / "figures").mkdir(exist_ok=True)
        plots.ratio_sweep(curves, out / "figures" / "ratio_sweep.png")
        (out / "sweep.json").write_text(
            json.dumps(
                {
                    "mode": study.sweep.mode,
                    "rows": rows,
                    "skipped": skipped,
                    "arms": {
                        k: {kk: vv for kk, vv in v.items() if kk != "mean_test_probs"}
                        for k, v in arms.items()
                    },
                },
                indent=1,
            )
        )
        with open(out / "sweep.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        (out / "sweep.md").write_text(_markdown(study, rows, skipped))
        return {"rows": len(rows), "skipped": skipped}

    return fn


def _markdown(study, rows, skipped) -> str:
    def ci(r, k):
        return f"{r[k + '_mean']:.3f} [{r[k + '_ci_low']:.3f}, {r[k + '_ci_high']:.3f}]"

    lines = [
        "# Synthetic-ratio sweep",
        "",
        f"Source `{study.data.source}`"
        + (" (**simulated** phantom)" if study.data.source == "phantom" else "")
        + f", mode `{study.sweep.mode}`, classifier `{study.classifier.model}` × seeds "
        f"{list(study.classifier.seeds)}; 95 % bootstrap CIs on the real-only test split; "
        "p: paired bootstrap vs the original arm (fraction 0).",
        "",
        "| generator | synthetic share | synthetic | real tumour | tumour F1 | ROC AUC | p(ΔF1) "
        "| p(ΔAUC) |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for r in rows:
        p1 = "–" if r["p_delta_f1"] is None else f"{r['p_delta_f1']:.3f}"
        p2 = "–" if r["p_delta_auc"] is None else f"{r['p_delta_auc']:.3f}"
        lines.append(
            f"| {r['generator']} | {r['fraction']:.0%} | {r['synthetic']} | {r['real_minority']} "
            f"| {ci(r, 'f1')} | {ci(r, 'roc_auc')} | {p1} | {p2} |"
        )
    lines += [
        "",
        *[f"- `{k}` not trained: {v}" for k, v in skipped.items()],
        "",
        "![ratio sweep](figures/ratio_sweep.png)",
        "",
    ]
    return "\n".join(lines)


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path, verify: bool = False) -> dict:
    if config.study.cv_folds:  # silently sweeping the single split would mislead
        raise UserError("study.cv_folds: the ratio sweep runs on the single split; set it to 0")
    workdir = Path(workdir)
    results = run_stages(build_sweep_stages(config), config, workdir, verify)
    print((workdir / "sweep.md").read_text(), flush=True)
    print(f"sweep report: {workdir / 'sweep.md'}", file=sys.stderr)
    return results
