"""Many small classifiers: trained one after another vs stacked on the engine's member axis.

The study trains ~48 paper-size classifiers (its default classifier config: `rare_tumour`'s
`classifier` section, 32 px, batch 32, 10 epochs) on training sets of a few hundred to ~2,000
images. For each member count M this times `fit_classifiers` on M such sets (sizes spread
evenly over `--sizes`, seeds 0..M-1, one shared validation split):

* **sequential** (`vmap=False`): M engine runs through `train()`, sharing compiled programs;
* **stacked** (`vmap=True`): the M members in one vmapped program (`jaxsynth.train.members`).

Each mode first runs a one-epoch warm-up call on the same sets (compiles; reported as
`warmup_s`), then the timed call (`seconds`). `steps_per_s` counts the engine's dispatched
optimiser steps (sequential: every member's; stacked: vmapped steps, each advancing all M), and
`member_steps_per_s` the members' own steps done per second (the work the study needs: the sum
of `epochs * ceil(n / batch)` over the members), comparable across modes.

    python bench/members_bench.py                       # M = 1, 4, 16: table + JSON
    python bench/members_bench.py --members 2 --epochs 1 --sizes 64,96   # a quick check

Writes bench/results/members_bench.json and prints a Markdown table. Run it alone on the
machine (`flock $HEAVY_LOCK` on a shared one); on CPU the stacked mode is expected to be slower
(grouped convolutions), it is the accelerator path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from jaxsynth import xla_flags  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", default="1,4,16", help="member counts M")
    p.add_argument("--modes", default="sequential,stacked")
    p.add_argument("--config", default="rare_tumour", help="config whose `classifier` to use")
    p.add_argument("--epochs", type=int, default=0, help="0: the config's classifier.epochs")
    p.add_argument("--sizes", default="300,2000", help="smallest,largest training set")
    p.add_argument("--val", type=int, default=110, help="validation images")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--no-xla-flags", action="store_true")
    p.add_argument("--out", default=str(HERE / "results" / "members_bench.json"))
    return p.parse_args()


ARGS = parse_args()
if not ARGS.no_xla_flags:
    xla_flags.apply()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.models.classifier import build_from_config  # noqa: E402
from jaxsynth.tasks.classify_many import fit_classifiers  # noqa: E402


def _set(n: int, seed: int, size: int):
    """n random uint8 tiles, ~10 % tumour (the study's balance) with a learnable blob."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.1).astype(np.int32)
    labels[:2] = (0, 1)  # both classes present
    images = rng.integers(0, 150, (n, size, size, 3), dtype=np.uint8)
    q = size // 4
    images[labels == 1, q : 3 * q, q : 3 * q] += 100
    return images, labels


def datasets(m: int):
    lo, hi = (int(s) for s in ARGS.sizes.split(","))
    sizes = [round(x) for x in np.linspace(lo, hi, m)] if m > 1 else [hi]
    return [_set(n, i, ARGS.image_size) for i, n in enumerate(sizes)]


def time_mode(mode: str, m: int, cfg, model) -> dict:
    sets = datasets(m)
    val = _set(ARGS.val, 10_000, ARGS.image_size)
    epochs = ARGS.epochs or int(cfg.epochs)
    kw = dict(
        val_images=val[0],
        val_labels=val[1],
        batch_size=int(cfg.batch_size),
        lr=float(cfg.lr),
        class_weights=bool(cfg.class_weights),
        model=model,
        vmap=mode == "stacked",
    )
    seeds = list(range(m))
    t0 = time.perf_counter()
    fit_classifiers(sets, seeds, epochs=1, **kw)  # compiles what the timed call runs
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = fit_classifiers(sets, seeds, epochs=epochs, **kw)
    jax.block_until_ready(jax.tree.leaves([v for v, _ in out]))
    seconds = time.perf_counter() - t0
    member_steps = [epochs * math.ceil(len(s[0]) / kw["batch_size"]) for s in sets]
    dispatched = max(member_steps) if mode == "stacked" else sum(member_steps)
    return {
        "mode": mode,
        "members": m,
        "epochs": epochs,
        "train_sizes": [len(s[0]) for s in sets],
        "warmup_s": warmup,
        "seconds": seconds,
        "steps": dispatched,
        "steps_per_s": dispatched / seconds,
        "member_steps": sum(member_steps),
        "member_steps_per_s": sum(member_steps) / seconds,
        "best_epochs": [h["best_epoch"] for _, h in out],
    }


def write_result(rows) -> Path:
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "loadavg_at_end": os.getloadavg(),
        },
        "args": vars(ARGS),
        "rows": rows,
    }
    out = Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return out


def markdown_table(rows) -> str:
    lines = [
        "| M | mode | epochs | warm-up s | seconds | steps/s | member-steps/s | vs sequential |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seq = {r["members"]: r["seconds"] for r in rows if r["mode"] == "sequential"}
    for r in rows:
        base = seq.get(r["members"])
        speed = f"{base / r['seconds']:.2f}x" if base else "-"
        lines.append(
            f"| {r['members']} | {r['mode']} | {r['epochs']} | {r['warmup_s']:.1f} | "
            f"{r['seconds']:.2f} | {r['steps_per_s']:.1f} | {r['member_steps_per_s']:.1f} | "
            f"{speed} |"
        )
    return "\n".join(lines)


def main() -> int:
    cfg = load_config(ARGS.config).classifier
    model = build_from_config(cfg, ARGS.image_size)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; classifier {cfg.model}, "
        f"batch {cfg.batch_size}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        flush=True,
    )
    rows = []
    for m in (int(x) for x in ARGS.members.split(",")):
        for mode in ARGS.modes.split(","):
            row = time_mode(mode, m, cfg, model)
            rows.append(row)
            print(
                f"M={m:3d} {mode:10s} {row['seconds']:.2f} s (warm-up {row['warmup_s']:.1f} s), "
                f"{row['steps_per_s']:.1f} steps/s, {row['member_steps_per_s']:.1f} "
                "member-steps/s",
                flush=True,
            )
            write_result(rows)  # after every row: a cut-short run keeps its numbers
    out = write_result(rows)
    print()
    print(markdown_table(rows))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
