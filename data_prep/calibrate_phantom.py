"""Measure the phantom's calibration: paper-000 CNN tumour F1 on a rare vs a balanced split.

Why: the phantom's `difficulty` must leave room for synthetic data to help. With the study
protocol (real-only test carved first), the CNN trained on the rare split (80 tumour / 800
normal, validation 10 / 100) should reach a tumour F1 clearly below 1 (target 0.4-0.8), while
the same CNN trained on a balanced split of 5,000 (2,500 / 2,500, validation 100 / 100) should
exceed 0.9. Both are scored on the same balanced real test split (default 500 / 500).

One study split per (size, difficulty, seed) is drawn with `build_study_split` (test, then val,
then train); the rare regime's train/val are the first 80 / 800 and 10 / 100 of that split's
(randomly ordered) train/val, so both regimes share the test set. The CNN: 10 epochs, batch 32,
Adam 1e-3, balanced class weights, best-validation-loss weights, threshold chosen on validation.

    python data_prep/calibrate_phantom.py --sizes 32 64 --seeds 0 1 2 \
        --difficulties 0.5 --out bench/results/phantom_calibration.json
    python data_prep/calibrate_phantom.py --preview docs/img/phantom_preview.png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REGIMES = {
    # name: (train tumour, train normal, val tumour, val normal)
    "rare": (80, 800, 10, 100),
    "balanced": (2500, 2500, 100, 100),
}


def regime_arrays(split_arrays, n_tumour: int, n_normal: int):
    """The first n of each class from a split (its order is already a seeded shuffle)."""
    labels = split_arrays.labels
    idx = np.concatenate(
        [np.flatnonzero(labels == 0)[:n_normal], np.flatnonzero(labels == 1)[:n_tumour]]
    )
    if (labels[idx] == 1).sum() < n_tumour or (labels[idx] == 0).sum() < n_normal:
        raise ValueError("split too small for the regime")
    return split_arrays.images[idx], labels[idx]


def measure(
    size: int,
    difficulty: float,
    seed: int,
    *,
    regimes: dict[str, tuple[int, int, int, int]],
    test_per_class: int = 500,
    epochs: int = 10,
    verbose: bool = False,
) -> list[dict]:
    """Train and score the CNN for each regime on one phantom study split; one row per regime."""
    from jaxsynth.data.phantom import PhantomSource
    from jaxsynth.data.split import build_study_split
    from jaxsynth.tasks.classify import train_and_score

    train_t = max(r[0] for r in regimes.values())
    train_n = max(r[1] for r in regimes.values())
    val_t = max(r[2] for r in regimes.values())
    val_n = max(r[3] for r in regimes.values())
    per_class = test_per_class + max(train_t + val_t, train_n + val_n)
    start = time.perf_counter()
    source = PhantomSource(
        num_per_class=per_class, image_size=size, difficulty=difficulty, seed=seed
    )
    split = build_study_split(
        source,
        seed=seed,
        image_size=size,
        counts={
            "test": {"normal": test_per_class, "tumour": test_per_class},
            "val": {"normal": val_n, "tumour": val_t},
            "train": {"normal": train_n, "tumour": train_t},
        },
    )
    render_s = time.perf_counter() - start
    test = (split.test.images, split.test.labels)
    rows = []
    for name, (tr_t, tr_n, va_t, va_n) in regimes.items():
        t0 = time.perf_counter()
        metrics = train_and_score(
            regime_arrays(split.train, tr_t, tr_n),
            regime_arrays(split.val, va_t, va_n),
            test,
            epochs=epochs,
            seed=seed,
            verbose=verbose,
        )
        rows.append(
            {
                "size": size,
                "difficulty": difficulty,
                "seed": seed,
                "regime": name,
                "train": {"tumour": tr_t, "normal": tr_n},
                "val": {"tumour": va_t, "normal": va_n},
                "test": {"tumour": test_per_class, "normal": test_per_class},
                "epochs": epochs,
                **{
                    k: round(float(v), 4)
                    for k, v in metrics.items()
                    if isinstance(v, (int, float, np.floating, np.integer))
                },
                "render_s": round(render_s, 1),
                "train_s": round(time.perf_counter() - t0, 1),
            }
        )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and std of tumour F1 (and AUC) per (size, difficulty, regime) over seeds."""
    keys = sorted({(r["size"], r["difficulty"], r["regime"]) for r in rows})
    out = []
    for size, diff, regime in keys:
        sel = [r for r in rows if (r["size"], r["difficulty"], r["regime"]) == (size, diff, regime)]
        f1 = np.array([r["f1"] for r in sel])
        auc = np.array([r["roc_auc"] for r in sel])
        out.append(
            {
                "size": size,
                "difficulty": diff,
                "regime": regime,
                "seeds": [r["seed"] for r in sel],
                "f1_mean": round(float(f1.mean()), 3),
                "f1_std": round(float(f1.std()), 3),
                "f1_min": round(float(f1.min()), 3),
                "f1_max": round(float(f1.max()), 3),
                "auc_mean": round(float(auc.mean()), 3),
            }
        )
    return out


def print_table(summary: list[dict]) -> None:
    print(
        f"{'size':>4} {'difficulty':>10} {'regime':>9} {'seeds':>6} {'F1 mean':>8} "
        f"{'F1 std':>7} {'F1 min':>7} {'F1 max':>7} {'AUC':>6}"
    )
    for s in summary:
        print(
            f"{s['size']:>4} {s['difficulty']:>10.2f} {s['regime']:>9} {len(s['seeds']):>6} "
            f"{s['f1_mean']:>8.3f} {s['f1_std']:>7.3f} {s['f1_min']:>7.3f} {s['f1_max']:>7.3f} "
            f"{s['auc_mean']:>6.3f}"
        )


def write_preview(path: str, size: int = 64, per_row: int = 8, difficulty: float | None = None):
    """A labelled grid: row 1 normal, row 2 tumour (8 tiles each, default difficulty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxsynth.data.phantom import DEFAULT_DIFFICULTY, PhantomSource

    d = DEFAULT_DIFFICULTY if difficulty is None else difficulty
    src = PhantomSource(num_per_class=per_row, image_size=size, difficulty=d, seed=0)
    fig, axes = plt.subplots(2, per_row, figsize=(per_row * 1.3, 2 * 1.3 + 0.5), dpi=110)
    for row, name in enumerate(src.class_names):
        for col in range(per_row):
            ax = axes[row, col]
            ax.imshow(src.load(2 * col + row).image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=11)
    fig.suptitle(f"jaxsynth phantom (SIMULATED H&E), {size} px, difficulty {d:g}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument(
        "--difficulties",
        type=float,
        nargs="+",
        default=None,
        help="default: the phantom's DEFAULT_DIFFICULTY",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    p.add_argument("--test-per-class", type=int, default=500)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default=None, help="write all rows + the summary as JSON here")
    p.add_argument("--preview", default=None, help="only write the preview grid PNG here")
    p.add_argument("--verbose", action="store_true")
    p.add_argument(
        "--summarise",
        nargs="+",
        default=None,
        help="only summarise earlier runs: result JSON files or logs of this script's row lines",
    )
    args = p.parse_args(argv)

    if args.summarise:
        rows = []
        for path in args.summarise:
            text = Path(path).read_text()
            if text.lstrip().startswith("{\n") or text.lstrip().startswith('{"machine"'):
                rows += json.loads(text)["rows"]
            else:
                rows += [json.loads(x) for x in text.splitlines() if x.startswith('{"size"')]
        summary = summarise(rows)
        print_table(summary)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(
                    {"machine": platform.platform(), "rows": rows, "summary": summary}, f, indent=1
                )
            print(f"wrote {args.out}")
        return 0

    if args.preview:
        write_preview(args.preview)
        return 0

    from jaxsynth.data.phantom import DEFAULT_DIFFICULTY

    difficulties = args.difficulties or [DEFAULT_DIFFICULTY]
    regimes = {k: REGIMES[k] for k in args.regimes}
    rows: list[dict] = []
    jobs = [(s, d, seed) for s in args.sizes for d in difficulties for seed in args.seeds]
    start = time.perf_counter()
    for n, (size, diff, seed) in enumerate(jobs):
        new = measure(
            size,
            diff,
            seed,
            regimes=regimes,
            test_per_class=args.test_per_class,
            epochs=args.epochs,
            verbose=args.verbose,
        )
        rows += new
        for r in new:
            print(json.dumps(r), flush=True)
        elapsed = time.perf_counter() - start
        eta = elapsed / (n + 1) * (len(jobs) - n - 1)
        print(
            f"[{n + 1}/{len(jobs)}] {elapsed:.0f}s elapsed, ETA {eta:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    summary = summarise(rows)
    print_table(summary)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(
                {
                    "machine": platform.platform(),
                    "regimes": regimes,
                    "rows": rows,
                    "summary": summary,
                },
                f,
                indent=1,
            )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
