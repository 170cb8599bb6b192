"""Why WGAN-GP is slow on XLA:CPU, and what the im2col penalty critic buys.

Per-op timings of the critic's 4×4 stride-2 conv (one 32→16-px layer, 64→128 channels, batch 32)
as a strided convolution ("lax") and as space-to-depth + one matmul ("im2col"): forward, input
gradient, kernel gradient, and the gradient-penalty's gradient of the input-gradient with respect
to the kernel (second order). Then the whole WGAN-GP train step (n_critic 5) with the penalty's
critic in each form. Interleaved rounds; prints a table and writes bench/results/strided_conv.json.

    python bench/strided_conv_bench.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from jaxsynth import xla_flags  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--sizes", default="32,64", help="image sizes for the WGAN-GP step")
p.add_argument("--out", default=str(ROOT / "bench" / "results" / "strided_conv.json"))
ARGS = p.parse_args()
xla_flags.apply()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from benchutil import matmul_peak, time_call, xla_flops  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.models.layers import conv_4x4_s2  # noqa: E402
from jaxsynth.train.task import build_task  # noqa: E402

IMPLS = ("lax", "im2col")


def op_fns(impl):
    f = lambda x, k: conv_4x4_s2(x, k, impl)
    loss = lambda x, k: jnp.sum(jnp.tanh(f(x, k)))

    def penalty(k, x):
        gx = jax.grad(loss)(x, k)
        return jnp.sum((jnp.sqrt(jnp.sum(gx**2, axis=(1, 2, 3))) - 1.0) ** 2)

    return {
        "forward": (jax.jit(f), "xk"),
        "input_grad": (jax.jit(jax.grad(loss)), "xk"),
        "kernel_grad": (jax.jit(jax.grad(loss, argnums=1)), "xk"),
        "penalty_kernel_grad (2nd order)": (jax.jit(jax.grad(penalty)), "kx"),
    }


def wgan_step(size, impl):
    c = load_config(
        "wgan_gp",
        [
            f"--config.image_size={size}",
            "--config.model.g_base_width=32",
            "--config.model.g_max_width=128",
            "--config.model.d_base_width=32",
            "--config.model.d_max_width=128",
            f"--config.model.d_penalty_conv_impl={impl}",
        ],
    )
    task = build_task(c)
    b = 40
    batch = {
        "image": jax.random.uniform(jax.random.key(0), (b, size, size, 3)) * 2 - 1,
        "label": jnp.zeros((b,), jnp.int32),
    }
    state = task.init(jax.random.key(0), batch)
    step = jax.jit(task.train_step)
    return step, (state, batch, jax.random.key(1))


def main():
    x = jax.random.normal(jax.random.key(0), (32, 32, 32, 64))
    k = jax.random.normal(jax.random.key(1), (4, 4, 64, 128)) * 0.05
    rows: dict[tuple[str, str], list[float]] = {}
    fns = {impl: op_fns(impl) for impl in IMPLS}
    steps = {
        (s, impl): wgan_step(s, impl) for s in map(int, ARGS.sizes.split(",")) for impl in IMPLS
    }
    for _ in range(ARGS.rounds):  # interleaved: load changes hit both implementations alike
        for impl in IMPLS:
            for name, (fn, order) in fns[impl].items():
                args = (x, k) if order == "xk" else (k, x)
                n = 2 if "2nd" in name else 10
                rows.setdefault((name, impl), []).append(time_call(fn, args, n))
        for (size, impl), (fn, args) in steps.items():
            rows.setdefault((f"WGAN-GP step {size} px", impl), []).append(time_call(fn, args, 3))
    flops = {}
    for impl in IMPLS:
        for name, (fn, order) in fns[impl].items():
            flops[(name, impl)] = xla_flops(fn, (x, k) if order == "xk" else (k, x))
    peak = matmul_peak()
    names = list(dict.fromkeys(n for n, _ in rows))
    table = []
    print(f"measured float32 matmul peak: {peak:.1f} GFLOP/s")
    print(
        f"{'operation':34s} {'lax ms':>9s} {'im2col ms':>9s} {'lax/im2col':>10s}"
        f" {'lax %peak':>9s} {'im2col %peak':>12s}"
    )
    for name in names:
        lax_ms = 1000 * min(rows[(name, "lax")])
        im_ms = 1000 * min(rows[(name, "im2col")])
        pct = {
            impl: 100 * flops[(name, impl)] / (ms / 1000) / 1e9 / peak
            for impl, ms in (("lax", lax_ms), ("im2col", im_ms))
            if (name, impl) in flops
        }
        table.append(
            {
                "operation": name,
                "lax_ms": lax_ms,
                "im2col_ms": im_ms,
                "gflop": {i: flops.get((name, i), 0) / 1e9 for i in IMPLS},
                "pct_of_peak": pct,
            }
        )
        cells = [f"{pct[i]:.1f}" if i in pct else "-" for i in IMPLS]
        print(
            f"{name:34s} {lax_ms:9.1f} {im_ms:9.1f} {lax_ms / im_ms:10.2f}"
            f" {cells[0]:>9s} {cells[1]:>12s}"
        )
    out = {
        "machine": platform.processor() or platform.machine(),
        "device": str(jax.devices()[0]),
        "xla_flags": xla_flags.apply(),
        "rounds": ARGS.rounds,
        "timing": "best of rounds",
        "matmul_peak_gflops": peak,
        "rows": table,
    }
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {ARGS.out}")


if __name__ == "__main__":
    main()
