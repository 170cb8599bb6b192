"""Many classifiers at once vs one at a time: the step the study's arms run, on this backend.

Times one vmapped `classify.train_step` over M stacked paper CNNs (`fit_classifiers`'s
program) against M calls of the single-model jitted step, same batch (32 px, batch 32), and
optionally whole `fit_classifiers` runs with `strategy="vmap"` vs `"sequential"`. This is the
measurement behind `fit_classifiers(strategy="auto")`: vmap on GPU/TPU, sequential on CPU.

    python bench/classify_many_bench.py [--models 4] [--steps 10] [--fit-epochs 1]

Writes bench/results/classify_many_bench.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from jaxsynth import xla_flags  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=4, help="M models")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--fit-epochs", type=int, default=0, help="also time whole fits (0: skip)")
    p.add_argument("--no-xla-flags", action="store_true")
    p.add_argument("--out", default=str(HERE / "results" / "classify_many_bench.json"))
    return p.parse_args()


ARGS = parse_args()
if not ARGS.no_xla_flags:
    xla_flags.apply()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxsynth.tasks import classify as single  # noqa: E402
from jaxsynth.tasks.classify_many import _many_fns, _stack, fit_classifiers  # noqa: E402


def step_times(m: int, steps: int) -> dict:
    model = single.canonical_model(None)
    states = _stack([single.create_state(model, (32, 32, 3), lr=1e-3, seed=s) for s in range(m)])
    train_many = _many_fns(model)[0]
    data = {
        "image": jnp.zeros((m, 880, 32, 32, 3), jnp.uint8),
        "label": jnp.zeros((m, 880), jnp.int32),
    }
    idx, w, act = np.zeros((m, 32), np.int32), np.ones((m, 32), np.float32), np.ones(m, bool)
    states, loss = train_many(states, data, idx, w, act)
    jax.block_until_ready(loss)
    t = time.perf_counter()
    for _ in range(steps):
        states, loss = train_many(states, data, idx, w, act)
    jax.block_until_ready(loss)
    vmapped = (time.perf_counter() - t) / steps
    st = single.create_state(model, (32, 32, 3), lr=1e-3, seed=0)
    batch = {
        "image": np.zeros((32, 32, 32, 3), np.float32),
        "label": np.zeros(32, np.int32),
        "weight": np.ones(32, np.float32),
    }
    st, metrics = single._train_step_jit(st, batch)
    jax.block_until_ready(metrics)
    t = time.perf_counter()
    for _ in range(steps * m):
        st, metrics = single._train_step_jit(st, batch)
    jax.block_until_ready(metrics)
    return {"vmapped_step_s": vmapped, "m_single_steps_s": (time.perf_counter() - t) / steps}


def fit_times(m: int, epochs: int) -> dict:
    rng = np.random.default_rng(0)

    def data(n):
        labels = (rng.random(n) < 0.1).astype(np.int32)
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), labels

    sets, (vi, vl) = [data(880) for _ in range(m)], data(200)
    out = {}
    for strategy in ("vmap", "sequential", "vmap", "sequential"):  # 2nd round: compiled
        t = time.perf_counter()
        fit_classifiers(
            sets, list(range(m)), val_images=vi, val_labels=vl, epochs=epochs, strategy=strategy
        )
        out[strategy] = time.perf_counter() - t
    return {f"fit_{k}_s": v for k, v in out.items()}


def main() -> int:
    row = {
        "backend": jax.default_backend(),
        "models": ARGS.models,
        **step_times(ARGS.models, ARGS.steps),
    }
    if ARGS.fit_epochs:
        row.update(fit_times(ARGS.models, ARGS.fit_epochs))
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(json.dumps(row, indent=2))
    print("| backend | M | vmapped step s | M single steps s | vmapped / single |")
    print("|---|---|---|---|---|")
    ratio = row["vmapped_step_s"] / row["m_single_steps_s"]
    print(
        f"| {row['backend']} | {ARGS.models} | {row['vmapped_step_s']:.3f} | "
        f"{row['m_single_steps_s']:.3f} | {ratio:.2f} |"
    )
    for k, v in row.items():
        if k.startswith("fit_"):
            print(f"{k}: {v:.1f}")
    print(f"wrote {ARGS.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
