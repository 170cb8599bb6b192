"""The study report: paper 000's table with 95 % CIs and paired tests, plus the figures.

Aggregation over seeds and test images: for every arm, each seed's classifier gives test-set
probabilities and a validation-chosen threshold. The point estimate of a metric is its mean over
seeds. Its CI comes from a stratified bootstrap over test images — the same resampled indices for
every arm and seed — of that seed-mean, so it covers test-set sampling (dominant with a small
minority class) while averaging out seed noise; the across-seed SD is reported too. Arms are
compared with the original arm on the same resamples (paired bootstrap of ΔF1, ΔAUC; two-sided
p-value) and with DeLong's test on the seed-averaged probabilities.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall", "specificity", "macro_f1")


def aggregate_arms(
    arm_runs: dict[str, list[dict]],
    labels: np.ndarray,
    *,
    n_boot: int,
    seed: int = 0,
    baseline: str = "original",
) -> dict[str, dict]:
    """Per arm: mean over seeds, bootstrap 95 % CI, seed SD; paired Δ vs `baseline`."""
    from jaxsynth.eval import classification as cls

    labels = np.asarray(labels).astype(int)
    idx = cls.resample_indices(labels, n_boot, seed, stratified=True)
    boot: dict[str, dict[str, np.ndarray]] = {}
    out: dict[str, dict] = {}
    for arm, runs in arm_runs.items():
        per_seed = [
            cls.binary_metrics(labels, np.asarray(r["test_probs"]), r["threshold"]) for r in runs
        ]
        draws = {m: np.zeros(n_boot) for m in METRICS}
        for r in runs:
            d = cls.bootstrap_draws(labels, np.asarray(r["test_probs"]), r["threshold"], idx)
            for m in METRICS:
                draws[m] += d[m] / len(runs)
        boot[arm] = draws
        summary = {}
        for m in METRICS:
            vals = np.array([s[m] for s in per_seed], np.float64)
            lo, hi = np.percentile(draws[m], [2.5, 97.5])
            summary[m] = {
                "mean": float(vals.mean()),
                "ci95": [float(lo), float(hi)],
                "seed_sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                "per_seed": vals.tolist(),
            }
        out[arm] = {
            "metrics": summary,
            "seeds": [r["seed"] for r in runs],
            "counts": runs[0]["counts"],
            "thresholds": [r["threshold"] for r in runs],
            "mean_test_probs": np.mean([np.asarray(r["test_probs"]) for r in runs], axis=0),
        }
    if baseline in out:
        base_probs = out[baseline]["mean_test_probs"]
        for arm in out:
            if arm == baseline:
                continue
            comp = {}
            for m in ("f1", "roc_auc", "accuracy"):
                delta = boot[arm][m] - boot[baseline][m]
                point = out[arm]["metrics"][m]["mean"] - out[baseline]["metrics"][m]["mean"]
                p = 2 * min(np.mean(delta <= 0), np.mean(delta >= 0))
                comp[f"delta_{m}"] = {
                    "mean": float(point),
                    "ci95": [float(x) for x in np.percentile(delta, [2.5, 97.5])],
                    "p_paired_bootstrap": float(min(1.0, p)),
                }
            dl = cls.delong_test(labels, base_probs, out[arm]["mean_test_probs"])
            comp["delong_p_auc"] = float(dl["p_value"])
            out[arm]["vs_original"] = comp
    for arm in out:
        out[arm]["mean_test_probs"] = out[arm]["mean_test_probs"].tolist()
    return out


def _fmt(m: dict) -> str:
    return f"{m['mean']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


def results_table(arms: dict[str, dict], quality: dict[str, dict]) -> list[dict]:
    """Paper 000's table rows: arm, synthetic count, SSIM, FID, accuracy, tumour F1, ROC AUC."""
    rows = []
    for arm, a in arms.items():
        gen = arm.split("_synthetic_only")[0] if arm != "original" else None
        q = quality.get(gen, {}) if gen else {}
        vs = a.get("vs_original", {})
        rows.append(
            {
                "arm": arm,
                "synthetic": a["counts"]["synthetic"],
                "real": a["counts"]["real"],
                "ssim_mean": q.get("ssim_mean"),
                "fid": q.get("fid"),
                "fid_features": q.get("fid_features"),
                "accuracy": a["metrics"]["accuracy"],
                "f1": a["metrics"]["f1"],
                "roc_auc": a["metrics"]["roc_auc"],
                "delta_f1_p": vs.get("delta_f1", {}).get("p_paired_bootstrap"),
                "delta_auc_p": vs.get("delta_roc_auc", {}).get("p_paired_bootstrap"),
                "delong_p": vs.get("delong_p_auc"),
            }
        )
    return rows


def _num(x, fmt=".3f"):
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| arm | synthetic | SSIM (mean) | FID | accuracy [95% CI] | tumour F1 [95% CI] "
        "| ROC AUC [95% CI] | p(ΔF1) | p(ΔAUC) | DeLong p |\n"
        "|---|---:|---:|---:|---|---|---|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['synthetic']} | {_num(r['ssim_mean'])} | {_num(r['fid'], '.1f')} "
            f"| {_fmt(r['accuracy'])} | {_fmt(r['f1'])} | {_fmt(r['roc_auc'])} "
            f"| {_num(r['delta_f1_p'])} | {_num(r['delta_auc_p'])} | {_num(r['delong_p'])} |"
        )
    return head + "\n".join(lines) + "\n"


def console_table(rows: list[dict]) -> str:
    w = max(len(r["arm"]) for r in rows) + 2
    out = [f"{'arm':<{w}}{'synth':>6} {'SSIM':>6} {'F1 [95% CI]':>24} {'AUC [95% CI]':>24}"]
    for r in rows:
        out.append(
            f"{r['arm']:<{w}}{r['synthetic']:>6} {_num(r['ssim_mean']):>6} "
            f"{_fmt(r['f1']):>24} {_fmt(r['roc_auc']):>24}"
        )
    return "\n".join(out)


def write_csv(rows: list[dict], path: Path) -> None:
    flat = []
    for r in rows:
        d = {k: v for k, v in r.items() if not isinstance(v, dict)}
        for m in ("accuracy", "f1", "roc_auc"):
            d[f"{m}_mean"] = r[m]["mean"]
            d[f"{m}_ci_low"], d[f"{m}_ci_high"] = r[m]["ci95"]
            d[f"{m}_seed_sd"] = r[m]["seed_sd"]
        flat.append(d)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)


def dump_json(obj, path: Path) -> None:
    """Strict JSON (non-finite numbers → null, listed under "nonfinite"), written atomically."""
    from jaxsynth.validate import strict_json

    obj, nonfinite = strict_json(json.loads(json.dumps(obj, default=lambda o: o.tolist())))
    if nonfinite and isinstance(obj, dict):
        obj["nonfinite"] = nonfinite
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False))
    os.replace(tmp, path)


# What the report stage writes into its directory and the runner publishes into the workdir.
REPORT_OUTPUTS = ("results.json", "results.csv", "report.md", "figures")


def report_stage():
    """Collect every stage's result into results.json/csv, report.md and the figures (in the
    stage's directory; the runner publishes them into the workdir)."""

    def fn(ctx):
        from jaxsynth.study import plots
        from jaxsynth.study.common import generator_seeds, gsuffix, study_split
        from jaxsynth.study.generators import enabled_generators
        from jaxsynth.study.report_verdicts import verdict_report
        from jaxsynth.version import environment

        study = ctx.config
        split = study_split(ctx)
        labels = split.test.labels
        runs: dict[str, list[dict]] = {}
        skipped_arms: dict[str, str] = {}
        for name, res in ctx.results.items():
            if name.startswith("arm_") and name in ctx.stage.inputs:
                if "skipped" in res:
                    skipped_arms[res["arm"]] = res["skipped"]
                else:
                    runs.setdefault(res["arm"], []).append(res)
            if name.startswith("arms_") and name in ctx.stage.inputs:  # a generator's family
                skipped_arms.update(res["skipped"])
                for r in res["runs"]:
                    runs.setdefault(r["arm"], []).append(r)
        arms = aggregate_arms(runs, labels, n_boot=study.eval.bootstrap, seed=study.seed)
        gens = enabled_generators(study)
        k0 = gsuffix(generator_seeds(study)[0])  # tables and figures: the first generator seed
        quality = {g: ctx.input(f"synth_{g}{k0}") for g in gens}
        rows = results_table(arms, quality)
        out_dir = ctx.dir
        fig_dir = out_dir / "figures"
        fig_dir.mkdir(exist_ok=True)
        plots.roc_curves(arms, labels, fig_dir / "roc_curves.png")
        plots.classifier_loss_curves(
            {a: r[0]["history"] for a, r in runs.items()}, fig_dir / "classifier_losses.png"
        )
        plots.confusion_matrices(
            arms,
            labels,
            {a: float(np.mean(arms[a]["thresholds"])) for a in arms},
            split.class_names,
            fig_dir / "confusion_matrices.png",
        )
        import shutil

        gen_figs = {}
        for g in gens:
            figs = {}
            for stage, fname in (
                (f"sample_{g}{k0}", "grid.png"),
                (f"synth_{g}{k0}", "closest_pairs.png"),
                (f"synth_{g}{k0}", "tsne.png"),
                (f"gen_{g}{k0}", "run/loss_curves.png"),
                (f"gen_{g}{k0}", "run/ssim_curve.png"),
            ):
                src = ctx.input_dir(stage) / fname
                if src.is_file():
                    dst = fig_dir / f"{g}_{Path(fname).name}"
                    shutil.copyfile(src, dst)
                    figs[Path(fname).stem] = f"figures/{dst.name}"
            gen_figs[g] = figs
        verdict_extra, verdict_md = verdict_report(study, runs, split, fig_dir)
        spaces = {n: ctx.input(n) for n in ctx.stage.inputs if n.startswith("spaces_")}
        spaces_extra, spaces_md = {}, ""
        if spaces:  # eval.extractors: FD in more feature spaces
            from jaxsynth.study.feature_spaces import spaces_markdown, spaces_summary

            spaces_extra = {"feature_spaces": {**spaces_summary(spaces), "per_stage": spaces}}
            spaces_md = "\n" + spaces_markdown(spaces_extra["feature_spaces"])
        results = {
            "config": json.loads(study.to_json_best_effort()),
            "environment": environment(),
            "split": ctx.input("split"),
            "generators": {
                g: {
                    "training": ctx.input(f"gen_{g}{k0}"),
                    "quality": quality[g],
                    "per_generator_seed": {
                        k: {
                            "training": ctx.input(f"gen_{g}{gsuffix(k)}"),
                            "quality": ctx.input(f"synth_{g}{gsuffix(k)}"),
                        }
                        for k in generator_seeds(study)
                    },
                }
                for g in gens
            },
            "arms": arms,
            "skipped_arms": skipped_arms,
            "table": rows,
            **verdict_extra,
            **spaces_extra,
        }
        dump_json(results, out_dir / "results.json")
        write_csv(rows, out_dir / "results.csv")
        (out_dir / "report.md").write_text(
            markdown_report(study, ctx.input("split"), rows, quality, gen_figs, skipped_arms)
            + "\n"
            + verdict_md
            + spaces_md
        )
        verdict_lines = "\n".join(f"  {v}" for v in verdict_extra["verdicts"].values())
        return {
            "console_table": console_table(rows) + "\nverdicts:\n" + verdict_lines,
            "rows": len(rows),
        }

    return fn


def markdown_report(study, split_info: dict, rows, quality, gen_figs, skipped_arms) -> str:
    source = study.data.source
    simulated = source == "phantom"
    c = split_info["counts"]
    names = split_info["class_names"]
    lines = [
        "# Rare-tumour study report",
        "",
        f"Source: `{source}`"
        + (" (**simulated** H&E phantom — not real tissue)" if simulated else "")
        + f", {study.image_size} px, seed {study.seed}.",
        "",
        "Split (real images only in val/test; carved test → val → train before any generator "
        "saw data):",
        "",
        "| split | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for n in ("train", "val", "test"):
        lines.append(f"| {n} | " + " | ".join(str(v) for v in c[n]) + " |")
    lines += [
        "",
        f"Classifier: `{study.classifier.model}`, {study.classifier.epochs} epochs, batch "
        f"{study.classifier.batch_size}, class weights {study.classifier.class_weights}, "
        f"seeds {list(study.classifier.seeds)}; threshold chosen on the real validation split.",
        "Metrics are means over seeds with 95 % stratified-bootstrap CIs over test images "
        f"({study.eval.bootstrap} resamples); p-values: paired bootstrap vs `original` and "
        "DeLong's test for AUC.",
        "",
        markdown_table(rows),
        *[f"Arm `{a}` not trained: {why}.\n" for a, why in skipped_arms.items()],
        "SSIM: mean SSIM of each synthetic image to every real training tumour image (paper 000). "
        "FID: "
        + (
            "Inception (pytorch-fid weights)"
            if study.eval.inception_weights
            else "domain FID — features of the paper-000 CNN trained on the original arm "
            "(no Inception weights configured; not comparable to published FIDs)"
        )
        + ", synthetic vs held-out real tumour images.",
        "",
        "## Generators",
        "",
        "| generator | generated | kept after memorisation filter | flagged | SSIM mean | "
        "SSIM max | FID | KID (domain) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g, q in quality.items():
        lines.append(
            f"| {g} | {q['generated']} | {q['kept']} | {q['flagged_fraction']:.1%} | "
            f"{q['ssim_mean']:.3f} | {q['ssim_max_mean']:.3f} | {q['fid']:.2f} | "
            f"{q['domain_kid']:.4f} |"
        )
    lines += [
        "",
        "## Figures",
        "",
        "![ROC curves](figures/roc_curves.png)",
        "",
        "![Classifier losses](figures/classifier_losses.png)",
        "",
        "![Confusion matrices](figures/confusion_matrices.png)",
        "",
    ]
    for g, figs in gen_figs.items():
        lines.append(f"### {g}")
        lines.append("")
        for title, rel in figs.items():
            lines.append(f"![{g} {title}]({rel})")
            lines.append("")
    return "\n".join(lines) + "\n"
