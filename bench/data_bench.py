"""Loader throughput: images/s out of the Grain pipeline at 64 and 128 px.

Compared side by side with the reference a loader has to beat: a plain numpy loop doing the same
work (index, flip/rot90, scale to [-1, 1], stack) with no framework. Prints a table and writes
`bench/results/data_bench.json`. Run: `python bench/data_bench.py [--seconds 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def _numpy_reference(images: np.ndarray, batch: int, seconds: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    n, done, t0 = len(images), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = rng.integers(0, n, batch)
        out = []
        for i in idx:
            x = images[i]
            if rng.integers(2):
                x = x[:, ::-1]
            x = np.rot90(x, int(rng.integers(4)))
            out.append(x.astype(np.float32) / 127.5 - 1.0)
        np.stack(out)
        done += batch
    return done / (time.perf_counter() - t0)


def _grain(images, labels, batch, seconds, workers) -> float:
    from jaxsynth.data.pipeline import make_loader

    loader = make_loader(
        {"image": images, "label": labels},
        global_batch_size=batch,
        seed=0,
        augment="flip_rot90",
        worker_count=workers,
    )
    it = iter(loader)
    next(it)  # start-up (worker spawn) is not throughput
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        done += len(next(it)["label"])
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default="bench/results/data_bench.json")
    args = ap.parse_args()
    rows = []
    for size in (64, 128):
        rng = np.random.default_rng(size)
        images = rng.integers(0, 256, (2048, size, size, 3), dtype=np.uint8)
        labels = np.arange(2048) % 2
        ref = _numpy_reference(images, args.batch, args.seconds)
        for workers in (0, 2):
            ips = _grain(images, labels, args.batch, args.seconds, workers)
            rows.append(
                {"size": size, "workers": workers, "grain_img_s": ips, "numpy_loop_img_s": ref}
            )
    print(f"{'px':>4} {'workers':>7} {'grain img/s':>12} {'numpy loop img/s':>17} {'ratio':>6}")
    for r in rows:
        ratio = r["grain_img_s"] / r["numpy_loop_img_s"]
        print(
            f"{r['size']:>4} {r['workers']:>7} {r['grain_img_s']:>12.0f} "
            f"{r['numpy_loop_img_s']:>17.0f} {ratio:>6.2f}"
        )
    result = {
        "bench": "data_bench",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "batch": args.batch,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
