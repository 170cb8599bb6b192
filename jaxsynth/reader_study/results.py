"""`reader-study results`: score a study (per rater and pooled) as JSON, markdown and a figure.

What it reports (papers 003 and 004):
- per rater and pooled: % of real images called real, % of synthetic images called synthetic,
  accuracy with an exact binomial test against chance (see `stats.accuracy_summary`);
- Fleiss' kappa over the images that every rater has answered (2+ raters);
- Likert realism means for real and synthetic images, and paper 004's Pearson r between each
  synthetic image's mean realism score and its SSIM. The SSIM is read from `--ssim-json`
  ({"<path under --synthetic>": ssim}) or else computed as paper 000's "each synthetic image vs
  the real set": the mean SSIM of the synthetic image against every real image of the study
  (`jaxsynth.eval.image_metrics.ssim_to_set`, per_image_mean);
- `answers.csv`: every answer with its ground truth, for the organiser's own analysis;
- `results.png`: paper 003's figure 5 — for real and for synthetic images, the share of correct
  (green) and incorrect (red) calls, one bar per rater plus the pooled bar.
Unfinished raters are included with what they have answered (`answered` / `total` say so).
"""

from __future__ import annotations

import collections
import csv
import json
import os
from pathlib import Path

import numpy as np

from jaxsynth.data.imageio import decode_image
from jaxsynth.errors import UserError
from jaxsynth.reader_study import stats, store


def _load_answers(conn) -> list[dict]:
    rows = conn.execute(
        "SELECT r.name AS rater, im.image_id, im.origin, im.source_path, a.call, a.score "
        "FROM answers a JOIN items i ON i.rater_id = a.rater_id AND i.position = a.position "
        "JOIN images im ON im.image_id = i.image_id JOIN raters r ON r.rater_id = a.rater_id "
        "ORDER BY r.rater_id, a.position"
    ).fetchall()
    return [dict(r) for r in rows]


def _group_summary(answers: list[dict]) -> dict:
    real = [a for a in answers if a["origin"] == "real"]
    synth = [a for a in answers if a["origin"] == "synthetic"]
    out = stats.accuracy_summary(
        sum(a["call"] == "real" for a in real),
        len(real),
        sum(a["call"] == "synthetic" for a in synth),
        len(synth),
    )
    real_scores = [a["score"] for a in real if a["score"] is not None]
    synth_scores = [a["score"] for a in synth if a["score"] is not None]
    out["likert"] = {
        "real_mean": stats.mean_or_none(real_scores),
        "real_n": len(real_scores),
        "synthetic_mean": stats.mean_or_none(synth_scores),
        "synthetic_n": len(synth_scores),
    }
    return out


def _study_ssim(study_dir: Path, conn) -> dict[int, float]:
    """Per synthetic image_id: mean SSIM against every real image of the study."""
    from jaxsynth.eval.image_metrics import ssim_to_set

    rows = conn.execute(
        "SELECT image_id, file_name, origin FROM images ORDER BY image_id"
    ).fetchall()
    arrays = {
        r["image_id"]: decode_image(
            study_dir / store.IMAGES_DIR / r["file_name"], name=r["file_name"]
        )[0]
        for r in rows
    }
    fake_ids = [r["image_id"] for r in rows if r["origin"] == "synthetic"]
    real_ids = [r["image_id"] for r in rows if r["origin"] == "real"]
    if not fake_ids or not real_ids:
        return {}
    res = ssim_to_set(
        np.stack([arrays[i] for i in fake_ids]), np.stack([arrays[i] for i in real_ids])
    )
    return {i: float(v) for i, v in zip(fake_ids, res["per_image_mean"], strict=True)}


def _file_ssim(path: Path, conn) -> dict[int, float]:
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"--ssim-json {path}: cannot read a JSON object ({e})") from e
    if not isinstance(values, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()
    ):
        raise UserError(f'--ssim-json {path}: expected an object {{"<synthetic file>": ssim}}')
    rows = conn.execute("SELECT image_id, source_path FROM images WHERE origin = 'synthetic'")
    out = {}
    for r in rows:
        key = r["source_path"]
        for candidate in (key, os.path.basename(key)):
            if candidate in values:
                out[r["image_id"]] = float(values[candidate])
                break
    if not out:
        raise UserError(
            f"--ssim-json {path}: no key matches a synthetic image of the study "
            "(keys are paths relative to the --synthetic folder, or file names)"
        )
    return out


def compute_results(
    study_dir: str | os.PathLike, *, ssim_json: str | os.PathLike | None = None, ssim: bool = True
) -> dict:
    """Everything `reader-study results` reports, as one JSON-ready dict."""
    study_dir = Path(study_dir)
    conn = store.connect(study_dir)
    try:
        answers = _load_answers(conn)
        all_raters = store.raters(conn)
        per_rater = []
        for r in all_raters:
            mine = [a for a in answers if a["rater"] == r.name]
            answered, total = store.progress(conn, r.rater_id)
            per_rater.append(
                {"rater": r.name, "answered": answered, "total": total, **_group_summary(mine)}
            )
        pooled = _group_summary(answers)

        # Fleiss' kappa over the images every rater has answered.
        calls_by_image = collections.defaultdict(list)
        for a in answers:
            calls_by_image[a["image_id"]].append(a["call"])
        complete = [c for c in calls_by_image.values() if len(c) == len(all_raters)]
        if len(all_raters) < 2:
            kappa = {
                "kappa": None,
                "n_images": 0,
                "n_raters": len(all_raters),
                "note": "needs 2+ raters",
            }
        elif not complete:
            kappa = {
                "kappa": None,
                "n_images": 0,
                "n_raters": len(all_raters),
                "note": "no image answered by every rater yet",
            }
        else:
            counts = np.array([[c.count("real"), c.count("synthetic")] for c in complete])
            value = stats.fleiss_kappa(counts)
            kappa = {
                "kappa": None if np.isnan(value) else value,
                "n_images": len(complete),
                "n_raters": len(all_raters),
            }
            if np.isnan(value):
                kappa["note"] = "undefined: every answer was the same"

        # Per image: how often called real, mean realism score.
        images = conn.execute(
            "SELECT image_id, origin, source_path, file_name FROM images ORDER BY image_id"
        ).fetchall()
        if ssim_json is not None:
            ssim_values, ssim_source = _file_ssim(Path(ssim_json), conn), f"file {ssim_json}"
        elif ssim:
            ssim_values = _study_ssim(study_dir, conn)
            ssim_source = "computed: mean SSIM of each synthetic image vs the study's real images"
        else:
            ssim_values, ssim_source = {}, None
        per_image = []
        for im in images:
            mine = [a for a in answers if a["image_id"] == im["image_id"]]
            scores = [a["score"] for a in mine if a["score"] is not None]
            per_image.append(
                {
                    "source_path": im["source_path"],
                    "file_name": im["file_name"],
                    "origin": im["origin"],
                    "n_answers": len(mine),
                    "called_real": sum(a["call"] == "real" for a in mine),
                    "mean_score": stats.mean_or_none(scores),
                    "n_scores": len(scores),
                    "ssim": ssim_values.get(im["image_id"]),
                }
            )
        pairs = [
            (p["mean_score"], p["ssim"])
            for p in per_image
            if p["origin"] == "synthetic" and p["mean_score"] is not None and p["ssim"] is not None
        ]
        correlation = None
        if ssim_source is not None:
            correlation = {
                "ssim_source": ssim_source,
                **stats.pearson([p[0] for p in pairs], [p[1] for p in pairs]),
            }
        meta = {row["key"]: row["value"] for row in conn.execute("SELECT key, value FROM meta")}
    finally:
        conn.close()
    return {
        "study": {
            "path": str(study_dir),
            "created_at": meta.get("created_at"),
            "seed": int(meta["seed"]),
            "images_per_rater": int(meta["n"]),
            "num_raters": len(all_raters),
            "image_size": meta.get("image_size"),
            "skipped_inputs": json.loads(meta.get("skipped", "{}")).get("skipped", 0),
        },
        "per_rater": per_rater,
        "pooled": pooled,
        "fleiss_kappa": kappa,
        "likert_vs_ssim": correlation,
        "per_image": per_image,
    }


def _fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f} %"


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _fmt_p(v: float | None) -> str:
    return "–" if v is None else (f"{v:.3g}" if v >= 1e-4 else f"{v:.1e}")


def to_markdown(res: dict) -> str:
    s = res["study"]
    lines = [
        "# Reader study results",
        "",
        f"{s['num_raters']} raters, {s['images_per_rater']} images each ({s['image_size']} px), "
        f"seed {s['seed']}, created {s['created_at']}.",
        "",
        "| rater | answered | real called real | synthetic called synthetic | accuracy "
        "[95 % CI] | binomial p (vs 50 %) | Likert real | Likert synthetic |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [(r["rater"], f"{r['answered']}/{r['total']}", r) for r in res["per_rater"]]
    pooled = res["pooled"]
    rows.append(("**pooled**", str(pooled["accuracy"]["n"]), pooled))
    for name, answered, r in rows:
        acc = r["accuracy"]
        ci = acc["ci95_pct"]
        ci_txt = "" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]"
        lines.append(
            f"| {name} | {answered} | {_fmt_pct(r['real']['pct_called_real'])} "
            f"({r['real']['called_real']}/{r['real']['n']}) | "
            f"{_fmt_pct(r['synthetic']['pct_called_synthetic'])} "
            f"({r['synthetic']['called_synthetic']}/{r['synthetic']['n']}) | "
            f"{_fmt_pct(acc['pct'])}{ci_txt} | {_fmt_p(acc['p_value'])} | "
            f"{_fmt(r['likert']['real_mean'])} (n={r['likert']['real_n']}) | "
            f"{_fmt(r['likert']['synthetic_mean'])} (n={r['likert']['synthetic_n']}) |"
        )
    k = res["fleiss_kappa"]
    lines += [
        "",
        f"Fleiss' kappa (real/synthetic calls, {k['n_images']} images answered by all "
        f"{k['n_raters']} raters): **{_fmt(k['kappa'], 3)}**"
        + (f" ({k['note']})" if k.get("note") else ""),
        "",
        "The pooled binomial test counts every answer as independent; with agreeing raters it "
        "overstates the evidence (see kappa).",
    ]
    c = res["likert_vs_ssim"]
    if c is not None:
        lines += [
            "",
            f"Likert realism vs SSIM (synthetic images, {c['n']} with a score; "
            f"SSIM {c['ssim_source']}): "
            f"Pearson r = **{_fmt(c['r'], 3)}**, p = {_fmt_p(c['p_value'])}"
            + (f" ({c['note']})" if c.get("note") else ""),
        ]
    return "\n".join(lines) + "\n"


def plot_figure5(res: dict, path: str | os.PathLike) -> None:
    """Paper 003's figure 5: correct (green) / incorrect (red) shares per rater and pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(r["rater"], r) for r in res["per_rater"]] + [("pooled", res["pooled"])]
    fig, axes = plt.subplots(1, 2, figsize=(max(6.5, 1.5 * len(groups) * 2), 4.4), sharey=True)
    panels = [
        ("real", "pct_called_real", "Real images: called real"),
        ("synthetic", "pct_called_synthetic", "Synthetic images: called synthetic"),
    ]
    x = np.arange(len(groups))
    for ax, (origin, key, title) in zip(axes, panels, strict=True):
        has = np.array([g[1][origin]["n"] > 0 for g in groups])
        correct = np.array([g[1][origin][key] or 0.0 for g in groups])
        wrong = np.where(has, 100.0 - correct, 0.0)
        ax.bar(x, correct, width=0.6, color="#2e9d4f", label="correct")
        ax.bar(x, wrong, width=0.6, bottom=correct, color="#d2413a", label="incorrect")
        for xi, c, w, h in zip(x, correct, wrong, has, strict=True):
            if not h:
                ax.text(xi, 2, "no answers", ha="center", va="bottom", fontsize=8)
                continue
            if c >= 8:
                ax.text(xi, c - 2, f"{c:.0f} %", ha="center", va="top", color="white", fontsize=9)
            if w >= 8:
                ax.text(xi, 98, f"{w:.0f} %", ha="center", va="top", color="white", fontsize=9)
        ax.axhline(50, color="k", lw=0.8, ls=":")
        labels = [f"{name}\n(n={g[origin]['n']})" for name, g in groups]
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("% of images (dotted: chance)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Blinded real-vs-synthetic test", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_answers_csv(study_dir: str | os.PathLike, path: str | os.PathLike) -> None:
    """Every stored answer, one row each, with the ground truth (for the organiser's analysis)."""
    conn = store.connect(study_dir)
    try:
        rows = conn.execute(
            "SELECT r.name AS rater, a.position, im.origin, im.source_path, a.call, a.score, "
            "i.first_shown_at, a.answered_at FROM answers a "
            "JOIN items i ON i.rater_id = a.rater_id AND i.position = a.position "
            "JOIN images im ON im.image_id = i.image_id JOIN raters r ON r.rater_id = a.rater_id "
            "ORDER BY r.rater_id, a.position"
        ).fetchall()
    finally:
        conn.close()
    columns = [
        "rater",
        "position",
        "origin",
        "source_path",
        "call",
        "score",
        "first_shown_at",
        "answered_at",
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[r[c] for c in columns] for r in rows])


def write_results(res: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """results.json, results.md, results.png (figure 5) and answers.csv under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "figure": out / "results.png",
        "answers": out / "answers.csv",
    }
    from jaxsynth.validate import strict_json

    strict, nonfinite = strict_json(res)  # e.g. a kappa of 0/0 is NaN: null, listed
    if nonfinite:
        strict["nonfinite"] = nonfinite
    paths["json"].write_text(json.dumps(strict, indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(to_markdown(res))
    plot_figure5(res, paths["figure"])
    write_answers_csv(res["study"]["path"], paths["answers"])
    return paths
