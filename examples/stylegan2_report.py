"""Numbers and figures for docs/stylegan2.md from finished runs (after `jaxsynth train`).

    python examples/stylegan2_report.py --run stylegan2=runs/sg2_study32 \
        --run dcgan=runs/dcgan_study32 --out docs/img/stylegan2 --num 200

Per run: the domain-FID curve and ADA's `p` curve (from metrics.jsonl), a 16-sample grid of the
EMA generator, MS-SSIM diversity of `--num` samples next to the real training and held-out
tumour tiles' (lower = more diverse; a collapsed generator -> 1), and the fraction of samples the
memorisation filter flags (pixel space, against the run's own training split). Prints a JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for k, v in rec.items():
            if k.startswith("fid") or k == "ada_p":
                out.setdefault(k, []).append((int(rec["step"]), float(v)))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", action="append", required=True, help="name=workdir")
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, default=200)
    args = p.parse_args()

    from jaxsynth.data.split import load_or_build_split
    from jaxsynth.eval.image_metrics import ms_ssim_diversity
    from jaxsynth.eval.memorization import memorization_report
    from jaxsynth.train.sampling import sample_from_workdir
    from jaxsynth.train.visuals import make_grid, plot_curves, save_png

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report, fid_series, p_series = {}, {}, {}
    for spec in args.run:
        name, _, wd = spec.partition("=")
        run = Path(wd)
        config = ml_collections.ConfigDict(json.loads((run / "config.json").read_text()))
        split = load_or_build_split(config, run, progress=False)
        tumour = [split.label_of("tumour")]
        train = split.train.of_classes(tumour).images
        heldout = np.concatenate(
            [split.val.of_classes(tumour).images, split.test.of_classes(tumour).images]
        )
        fake, _ = sample_from_workdir(run, num=args.num, seed=0)
        save_png(make_grid(fake[:16]), out / f"{name}_samples.png")
        flat = lambda a: np.asarray(a, np.float64).reshape(len(a), -1) / 255.0  # noqa: E731
        mem = memorization_report(flat(fake), flat(train), flat(heldout))
        c = curves(run)
        fid_key = next((k for k in c if k.startswith("fid")), None)
        if fid_key:
            fid_series[name] = c[fid_key]
        if "ada_p" in c:
            p_series[name] = c["ada_p"]
        report[name] = {
            "train_tumour_tiles": len(train),
            "last_step": max(s for s, _ in c[fid_key]) if fid_key else None,
            "fid_curve": c.get(fid_key, []),
            "fid_best": min(v for _, v in c[fid_key]) if fid_key else None,
            "fid_last": c[fid_key][-1][1] if fid_key else None,
            "ms_ssim_samples": ms_ssim_diversity(fake)["mean"],
            "ms_ssim_real_train": ms_ssim_diversity(train)["mean"],
            "ms_ssim_real_heldout": ms_ssim_diversity(heldout)["mean"],
            "memorised_fraction": mem["flagged_fraction"],
            "ada_p_last": c["ada_p"][-1][1] if "ada_p" in c else None,
        }
    if fid_series:
        plot_curves(fid_series, out / "fid_curves.png", "domain FID vs held-out tumour", "FID")
    if p_series:
        plot_curves(p_series, out / "ada_p.png", "ADA augmentation probability p", "p")
    print(json.dumps(report, indent=2))
    (out / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
