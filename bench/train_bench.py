"""GAN training throughput: jaxsynth (JAX) next to the same architectures in PyTorch, same run.

For each GAN (DCGAN, cGAN, WGAN-GP) and resolution, measures the engine's compiled train step
(steps/s, images/s), then runs bench/torch_gan.py under a PyTorch interpreter (eager and
torch.compile) on the same shapes, interleaved model by model so both see the same machine load.
Also reports model FLOPs per step (XLA's cost analysis of the step) against the machine's
measured float32 matmul peak (a large jitted jnp matmul).

    python bench/train_bench.py --torch-python VENV/bin/python      # all GANs, 64 and 128 px
    python bench/train_bench.py --models dcgan --sizes 64 --impl-sweep

The PyTorch interpreter is `--torch-python` or `$JAXSYNTH_TORCH_PYTHON` (unset: PyTorch is
skipped); `--torch-device cuda` runs the twin on the GPU with synchronised timers.

Writes bench/results/train_bench.json and prints a Markdown table.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from jaxsynth import xla_flags  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="dcgan,cgan,wgan_gp")
    p.add_argument("--sizes", default="64,128")
    p.add_argument("--batch", type=int, default=64, help="images per D/G update")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after 1 warm-up)")
    p.add_argument("--impl", default="phase", help="transposed-conv implementation")
    p.add_argument(
        "--impl-sweep", action="store_true", help="also time vjp and lax at the first size"
    )
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
    p.add_argument("--torch-modes", default="eager,compile")
    p.add_argument("--no-xla-flags", action="store_true")
    p.add_argument("--out", default=str(HERE / "results" / "train_bench.json"))
    return p.parse_args()


ARGS = parse_args()
if not ARGS.no_xla_flags:
    xla_flags.apply()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from benchutil import matmul_peak  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.data.pipeline import to_global  # noqa: E402
from jaxsynth.train.mesh import make_mesh, replicated  # noqa: E402
from jaxsynth.train.steps import make_step_fns  # noqa: E402
from jaxsynth.train.task import build_task  # noqa: E402


def gan_config(model: str, size: int, batch: int, impl: str):
    c = load_config(str(HERE.parent / "configs" / f"{model}.py"))
    c.image_size = size
    per_step = batch * (c.gan.n_critic if c.model.loss == "wgan_gp" else 1)
    c.batch_size = per_step
    c.model.upsample_impl = impl
    return c


def time_jax(config, steps: int) -> dict:
    task = build_task(config)
    mesh = make_mesh()
    rng = np.random.default_rng(0)
    size, b = config.image_size, config.batch_size
    local = {
        "image": rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32),
        "label": rng.integers(0, max(1, config.model.num_classes), b).astype(np.int32),
    }
    batch = to_global(local, mesh)
    state = jax.jit(task.init, out_shardings=replicated(mesh))(jax.random.PRNGKey(0), local)
    step, _ = make_step_fns(task, mesh)
    t0 = time.perf_counter()
    lowered = step.lower(state, batch)
    cost = lowered.cost_analysis() or {}
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, batch)  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, batch)
    jax.block_until_ready(m)
    dt = time.perf_counter() - t0
    finite = all(np.isfinite(float(v)) for v in jax.device_get(m).values())
    return {
        "steps_per_s": steps / dt,
        "compile_s": compile_s,
        "flops_per_step": float(cost.get("flops", float("nan"))),
        "finite": finite,
    }


def time_torch(config, batch: int, steps: int) -> dict:
    m, g = config.model, config.gan
    spec = {
        "image_size": config.image_size,
        "latent_dim": m.latent_dim,
        "num_classes": m.num_classes,
        "g_base_width": m.g_base_width,
        "g_max_width": m.g_max_width,
        "d_base_width": m.d_base_width,
        "d_max_width": m.d_max_width,
        "g_activation": m.g_activation,
        "g_norm": m.g_norm,
        "d_norm": m.d_norm,
        "d_dropout": m.d_dropout,
        "loss": m.loss,
        "n_critic": g.n_critic,
        "gp_weight": g.gp_weight,
        "real_label": g.real_label,
        "batch_size": config.batch_size,
        "lr": config.optim.g_lr,
        "warmup": 1,
        "steps": steps,
        "modes": ARGS.torch_modes.split(","),
        "device": ARGS.torch_device,
    }
    if not ARGS.torch_python:
        return {"error": "no PyTorch interpreter (--torch-python / $JAXSYNTH_TORCH_PYTHON)"}
    if not Path(ARGS.torch_python).is_file():
        return {"error": f"no PyTorch interpreter at {ARGS.torch_python}"}
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [ARGS.torch_python, str(HERE / "torch_gan.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("TORCH_RESULT ")]
    if not lines:
        return {"error": (proc.stderr or proc.stdout)[-500:]}
    return json.loads(lines[-1][len("TORCH_RESULT ") :])


def main() -> int:
    peak = matmul_peak()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    print(f"measured f32 matmul peak: {peak:.1f} GFLOP/s", flush=True)
    rows = []
    sizes = [int(s) for s in ARGS.sizes.split(",")]
    for model in ARGS.models.split(","):
        for size in sizes:
            impls = [ARGS.impl]
            if ARGS.impl_sweep and size == sizes[0] and model == "dcgan":
                impls += [i for i in ("vjp", "lax") if i != ARGS.impl]
            for impl in impls:
                config = gan_config(model, size, ARGS.batch, impl)
                steps = max(1, ARGS.steps if impl != "lax" else 1)
                j = time_jax(config, steps)
                row = {
                    "model": model,
                    "image_size": size,
                    "batch_per_update": ARGS.batch,
                    "images_per_step": config.batch_size,
                    "impl": impl,
                    "jax": j,
                    "jax_img_per_s": j["steps_per_s"] * config.batch_size,
                    "model_gflop_per_step": j["flops_per_step"] / 1e9,
                    "jax_gflop_per_s": j["flops_per_step"] * j["steps_per_s"] / 1e9,
                }
                row["jax_pct_of_matmul_peak"] = 100 * row["jax_gflop_per_s"] / peak
                if impl == ARGS.impl:
                    t = time_torch(config, ARGS.batch, steps)
                    row["torch"] = t
                    for mode in ("eager", "compile"):
                        sps = (t.get(mode) or {}).get("steps_per_s")
                        if sps:
                            row[f"jax_over_torch_{mode}"] = j["steps_per_s"] / sps
                rows.append(row)
                print(format_row(row), flush=True)
                write_result(rows, peak)  # after every row: a cut-short run keeps its numbers
    out = write_result(rows, peak)
    print()
    print(markdown_table(rows, peak))
    print(f"\nwrote {out}")
    return 0


def write_result(rows, peak) -> Path:
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "matmul_peak_gflops": peak,
            "loadavg_at_end": os.getloadavg(),
        },
        "rows": rows,
    }
    out = Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return out


def _torch_sps(row, mode):
    t = (row.get("torch") or {}).get(mode) or {}
    return t.get("steps_per_s")


def format_row(row) -> str:
    eager, comp = _torch_sps(row, "eager"), _torch_sps(row, "compile")
    return (
        f"{row['model']:8s} {row['image_size']:4d}px impl={row['impl']:5s} "
        f"jax {row['jax']['steps_per_s']:.3f} steps/s ({row['jax_img_per_s']:.1f} img/s, "
        f"{row['model_gflop_per_step']:.1f} GFLOP/step, "
        f"{row['jax_pct_of_matmul_peak']:.0f}% peak) | "
        f"torch eager {eager if eager is None else round(eager, 3)} "
        f"compile {comp if comp is None else round(comp, 3)}"
    )


def markdown_table(rows, peak) -> str:
    head = (
        "| GAN | px | images/step | JAX steps/s | JAX img/s | PyTorch eager steps/s | "
        "torch.compile steps/s | JAX / eager | GFLOP/step | JAX % of matmul peak |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        eager, comp = _torch_sps(r, "eager"), _torch_sps(r, "compile")
        jsps = r["jax"]["steps_per_s"]
        name = r["model"] + ("" if r["impl"] == "phase" else f" (ConvT {r['impl']})")
        comp_err = ((r.get("torch") or {}).get("compile") or {}).get("error")
        lines.append(
            f"| {name} | {r['image_size']} | {r['images_per_step']} | "
            f"{r['jax']['steps_per_s']:.3f} | {r['jax_img_per_s']:.1f} | "
            f"{'-' if eager is None else f'{eager:.3f}'} | "
            f"{('fails' if comp_err else '-') if comp is None else f'{comp:.3f}'} | "
            f"{'-' if eager is None else f'{jsps / eager:.2f}×'} | "
            f"{r['model_gflop_per_step']:.1f} | {r['jax_pct_of_matmul_peak']:.0f}% |"
        )
    lines.append(f"\nMeasured float32 matmul peak: {peak:.1f} GFLOP/s.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
