"""pix2pix training-step throughput: jaxsynth (the engine's Task, jitted) next to its PyTorch
twin (bench/torch_i2i.py: the same U-Net / PatchGAN / step), in the same run.

    flock /tmp/jaxsynth-heavy.lock python bench/i2i_bench.py --torch-python .venv/bin/python

For each size the JAX step is compiled, warmed up and timed over `--steps` chained steps; then
the PyTorch twin runs in a subprocess on the same shapes (eager, and torch.compile if asked),
so both see the same machine load. Prints a table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="32,64")
    p.add_argument("--batch", type=int, default=8, help="paper 004's batch size")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 1 warm-up)")
    p.add_argument(
        "--torch-python",
        default=os.environ.get("JAXSYNTH_TORCH_PYTHON", ""),
        help="interpreter with torch (or env JAXSYNTH_TORCH_PYTHON); empty: JAX only",
    )
    p.add_argument("--torch-modes", default="eager")
    p.add_argument("--out", default=str(HERE / "results" / "i2i_bench.json"))
    return p.parse_args(argv)


def jax_step(size: int, batch: int, steps: int) -> tuple[dict, dict]:
    import jax
    import jax.numpy as jnp

    from jaxsynth.config import load_config
    from jaxsynth.models.i2i import patchgan_depth

    config = load_config(str(HERE.parent / "configs" / "pix2pix.py"))
    config.image_size, config.batch_size = size, batch
    config.model.num_downs = {32: 4, 64: 5, 128: 6, 256: 8}[size]
    from jaxsynth.train.task import build_task

    task = build_task(config)
    k = jax.random.split(jax.random.key(0), 3)
    batch_arrays = {
        "image": jax.random.uniform(k[0], (batch, size, size, 3)) * 2 - 1,
        "mask": (jax.random.uniform(k[1], (batch, size, size, 1)) > 0.7).astype(jnp.float32),
        "label": jax.random.randint(k[2], (batch,), 0, 2),
    }
    state = jax.jit(task.init)(jax.random.key(1), batch_arrays)
    fn = jax.jit(lambda st, b: task.train_step(st, b, jax.random.fold_in(st.rng, st.step)))
    t0 = time.perf_counter()
    compiled = fn.lower(state, batch_arrays).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, batch_arrays)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, batch_arrays)
    jax.block_until_ready(m)
    sec = (time.perf_counter() - t0) / steps
    m = config.model
    spec = {
        "image_size": size,
        "batch": batch,
        "num_classes": int(m.num_classes),
        "g_base_width": int(m.g_base_width),
        "g_max_width": int(m.g_max_width),
        "num_downs": int(m.num_downs),
        "num_dropout": int(m.num_dropout),
        "d_base_width": int(m.d_base_width),
        "d_max_width": int(m.d_max_width),
        "d_num_down": patchgan_depth(size),
    }
    return {"steps_per_s": 1 / sec, "images_per_s": batch / sec, "compile_s": compile_s}, spec


def torch_step(spec: dict, args) -> dict:
    if not args.torch_python or not Path(args.torch_python).is_file():
        return {"error": f"no PyTorch interpreter at '{args.torch_python}'"}
    full = {**spec, "steps": args.steps, "modes": args.torch_modes.split(",")}
    from twin import run_twin

    return run_twin(args.torch_python, HERE / "torch_i2i.py", full)


def main(argv=None) -> int:
    from jaxsynth import xla_flags

    xla_flags.apply()
    args = parse_args(argv)
    import jax

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        j, spec = jax_step(size, args.batch, args.steps)
        t = torch_step(spec, args)
        row = {"size": size, "batch": args.batch, "jax": j, "torch": t, "spec": spec}
        eager = (t.get("eager") or {}).get("steps_per_s")
        if eager:
            row["jax_over_torch_eager"] = j["steps_per_s"] / eager
        rows.append(row)
        print(
            f"{size:4d} px batch {args.batch}: JAX {j['steps_per_s']:.2f} steps/s "
            f"(compile {j['compile_s']:.0f} s), torch eager "
            f"{'-' if eager is None else f'{eager:.2f}'} steps/s",
            flush=True,
        )
    print("\n| size | batch | JAX steps/s | torch eager steps/s | JAX / torch |")
    print("|---|---|---|---|---|")
    for r in rows:
        eager = (r["torch"].get("eager") or {}).get("steps_per_s")
        ratio = r.get("jax_over_torch_eager")
        print(
            f"| {r['size']} | {r['batch']} | {r['jax']['steps_per_s']:.2f} | "
            f"{'-' if eager is None else f'{eager:.2f}'} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"backend": jax.default_backend(), "devices": str(jax.devices()), "jax": jax.__version__}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
