"""DDPM U-Net: training images/s (JAX vs the same U-Net in PyTorch, same run) and sampling
images/s (DDIM-50 vs DDPM-1000, each one compiled loop).

Issue 4's goal: DDIM-50 at least 15x faster per image than DDPM-1000. The PyTorch twin
(bench/ddpm_torch.py, identical layers, parameter counts compared) runs in a separate venv as a
subprocess so that the two frameworks do not share a process. Prints a table and writes
`bench/results/ddpm_bench.json`.

Run: `python bench/ddpm_bench.py` (defaults: 32 px, batch 16, base 32 x (1,2,2), T=1000).
`--torch-python ''` skips PyTorch; `--no-xla-flags` measures without jaxsynth's XLA:CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--mults", default="1,2,2")
    p.add_argument("--num-res", type=int, default=2)
    p.add_argument("--attn", default="8", help="comma-separated feature sides with attention")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--sample-batch", type=int, default=8)
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument(
        "--torch-python",
        default=os.environ.get("JAXSYNTH_TORCH_PYTHON", ""),
        help="PyTorch interpreter for the twin (default $JAXSYNTH_TORCH_PYTHON; empty: skip)",
    )
    p.add_argument(
        "--torch-device",
        default=os.environ.get("JAXSYNTH_TORCH_DEVICE", "cpu"),
        help="cpu | cuda (synchronised timers)",
    )
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    p.add_argument("--no-xla-flags", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench/results/ddpm_bench.json"))
    return p.parse_args()


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def run_jax(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsynth.config import load_config
    from jaxsynth.diffusion.samplers import SamplerOptions, sample_loop
    from jaxsynth.tasks.ddpm import count_params, make_task

    config = load_config("configs/ddpm.py")
    config.image_size = args.image_size
    config.batch_size = args.batch
    config.model.base_channels = args.base
    config.model.channel_mults = ints(args.mults)
    config.model.num_res_blocks = args.num_res
    config.model.attention_resolutions = ints(args.attn)
    config.model.num_heads = args.heads
    config.model.dropout = 0.0
    config.ddpm.timesteps = args.timesteps
    task = make_task(config)

    rng = np.random.default_rng(0)
    s, b = args.image_size, args.batch
    batch = {
        "image": jnp.asarray(rng.uniform(-1, 1, (b, s, s, 3)), jnp.float32),
        "label": jnp.zeros((b,), jnp.int32),
    }
    state = jax.jit(task.init)(jax.random.key(0), batch)
    step = jax.jit(task.train_step, donate_argnums=0)
    t0 = time.perf_counter()
    state, m = step(state, batch, jax.random.key(1))
    jax.block_until_ready(m)
    compile_train = time.perf_counter() - t0
    for i in range(args.warmup):
        state, m = step(state, batch, jax.random.key(2 + i))
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(args.train_steps):
        state, m = step(state, batch, jax.random.key(100 + i))
        print(f"  jax train step {i + 1}/{args.train_steps}", end="\r", flush=True)
    jax.block_until_ready(m)
    train_ips = args.train_steps * b / (time.perf_counter() - t0)
    print()

    variables = state["model"].ema_variables
    out = {
        "params": count_params(variables["params"]),
        "train_img_per_s": train_ips,
        "train_compile_s": compile_train,
        "devices": [str(d) for d in jax.devices()],
    }
    n = args.sample_batch
    pred = task.default_options.prediction
    compiled = {}
    for name, opts in (
        (
            f"ddim{args.ddim_steps}",
            SamplerOptions("ddim", args.ddim_steps, eta=0.0, prediction=pred),
        ),
        (f"ddpm{args.timesteps}", SamplerOptions("ddpm", prediction=pred)),
    ):
        fn = jax.jit(
            lambda v, k, opts=opts: sample_loop(
                task.apply_fn, v, task.schedule, k, (n, s, s, 3), opts
            )
        )
        t0 = time.perf_counter()
        compiled[name] = fn.lower(variables, jax.random.key(0)).compile()
        out[f"{name}_compile_s"] = time.perf_counter() - t0
    # DDIM is timed before AND after DDPM (mean taken) so that a change in machine load during
    # the long DDPM run does not bias the ratio; the network evaluations are the same program.
    evals = {f"ddim{args.ddim_steps}": args.ddim_steps, f"ddpm{args.timesteps}": args.timesteps}
    times: dict[str, list[float]] = {k: [] for k in evals}
    for name in (*evals, next(iter(evals))):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled[name](variables, jax.random.key(1)))
        times[name].append(time.perf_counter() - t0)
        print(f"  jax {name}: {n / times[name][-1]:.4f} img/s ({times[name][-1]:.1f} s for {n})")
    for name, ts in times.items():
        run = sum(ts) / len(ts)
        out[f"{name}_img_per_s"] = n / run
        out[f"{name}_s_per_network_eval"] = run / evals[name]
        out[f"{name}_runs_s"] = ts
    return out


def run_torch(args, channels_last: bool, compile_: bool = False) -> dict:
    payload = {
        "image_size": args.image_size,
        "batch": args.batch,
        "base": args.base,
        "mults": list(ints(args.mults)),
        "num_res": args.num_res,
        "attn": list(ints(args.attn)),
        "heads": args.heads,
        "timesteps": args.timesteps,
        "warmup": args.warmup,
        "steps": args.train_steps,
        "ddim_steps": args.ddim_steps,
        "sample_batch": args.sample_batch,
        "channels_last": channels_last,
        "device": args.torch_device,
        "compile": compile_,
    }
    proc = subprocess.run(
        [args.torch_python, str(ROOT / "bench/ddpm_torch.py"), json.dumps(payload)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"torch benchmark failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    args = parse_args()
    load_at_start = list(os.getloadavg())  # other processes on the machine skew CPU timings
    if not args.no_xla_flags:
        from jaxsynth import xla_flags

        xla_flags.apply()
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    jax_res = run_jax(args)
    torch_res = {}
    if args.torch_python:
        for cl in (False, True):
            key = "torch_channels_last" if cl else "torch"
            print(f"  running PyTorch ({key}) ...", flush=True)
            torch_res[key] = run_torch(args, cl)
        if args.torch_compile:
            print("  running PyTorch (torch.compile) ...", flush=True)
            torch_res["torch_compile"] = run_torch(args, False, compile_=True)

    d = f"ddim{args.ddim_steps}"
    p = f"ddpm{args.timesteps}"
    speedup = jax_res[f"{d}_img_per_s"] / jax_res[f"{p}_img_per_s"]
    rows = [("JAX (jit, one compiled step)", jax_res["train_img_per_s"], jax_res[f"{d}_img_per_s"])]
    for key, r in torch_res.items():
        rows.append(
            (f"PyTorch {r['torch']} eager ({key})", r["train_img_per_s"], r["ddim_img_per_s"])
        )
    print()
    print(
        f"DDPM U-Net {args.image_size}px base {args.base} x{ints(args.mults)}, "
        f"{args.num_res} res blocks, attention at {ints(args.attn)}, batch {args.batch}, "
        f"params JAX {jax_res['params']:,}"
        + "".join(f", {k} {r['params']:,}" for k, r in torch_res.items())
    )
    print(f"{'':44s} {'train img/s':>12s} {d + ' img/s':>14s}")
    for name, tr, sm in rows:
        print(f"{name:44s} {tr:12.2f} {sm:14.3f}")
    print(
        f"JAX sampling: {d} {jax_res[f'{d}_img_per_s']:.3f} img/s, {p} "
        f"{jax_res[f'{p}_img_per_s']:.4f} img/s -> {d} is {speedup:.1f}x faster per image "
        f"(goal >= 15x)"
    )
    result = {
        "benchmark": "ddpm_bench",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "settings": vars(args),
        "jax": jax_res,
        "torch": torch_res,
        "ddim_vs_ddpm_speedup_per_image": speedup,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
