"""Where a GAN step's time goes on XLA:CPU: the % of the measured matmul peak reached by each
piece of the DCGAN-64 step (generator / discriminator, forward / parameter gradient / input
gradient), from XLA's cost analysis (FLOPs) and wall time of each piece compiled alone.

This is the profile behind BENCHMARKS.md's MFU paragraph: the step's MFU is the FLOP-weighted
harmonic mean of these pieces, so the slowest kind of kernel sets the ceiling.

    python bench/mfu_breakdown.py [--size 64] [--batch 32] [--rounds 3]
    python bench/mfu_breakdown.py --model ddpm --size 32 --batch 16 \
        --out bench/results/mfu_breakdown_ddpm.json

`--model ddpm` profiles the DDPM U-Net of bench/ddpm_bench.py instead: the whole network, and
one 3×3 conv and one GroupNorm+SiLU at its first-level shape.
Prints a table and writes bench/results/mfu_breakdown.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from jaxsynth import xla_flags  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=64)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--model", default="dcgan", choices=("dcgan", "ddpm"))
p.add_argument("--out", default=str(ROOT / "bench" / "results" / "mfu_breakdown.json"))
ARGS = p.parse_args()
xla_flags.apply()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from benchutil import matmul_peak, time_call, xla_flops  # noqa: E402

from jaxsynth.models.gan import Discriminator, Generator  # noqa: E402


def ddpm_pieces(s: int, b: int) -> dict:
    from jaxsynth.models.unet import UNet

    net = UNet(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2,
               attention_resolutions=(8,), num_heads=4)  # fmt: skip
    x = jax.random.normal(jax.random.key(0), (b, s, s, 3))
    t = jnp.full((b,), 500, jnp.int32)
    v = net.init(jax.random.key(1), x, t)
    fwd = lambda p, x: net.apply({"params": p}, x, t)
    h = jax.random.normal(jax.random.key(2), (b, s, s, 32))
    k = jax.random.normal(jax.random.key(3), (3, 3, 32, 32)) * 0.05
    conv = lambda h, k: jax.lax.conv_general_dilated(
        h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    gn = nn.GroupNorm(num_groups=32)
    gv = gn.init(jax.random.key(4), h)
    gn_silu = lambda p, h: jax.nn.silu(gn.apply({"params": p}, h))
    return {
        "U-Net forward": (jax.jit(fwd), (v["params"], x)),
        "U-Net forward + param grad": (
            jax.jit(jax.grad(lambda p, x: jnp.mean(fwd(p, x) ** 2))),
            (v["params"], x),
        ),
        "3x3 conv forward": (jax.jit(conv), (h, k)),
        "3x3 conv fwd + input grad": (
            jax.jit(jax.grad(lambda h, k: jnp.sum(jnp.tanh(conv(h, k))))),
            (h, k),
        ),
        "3x3 conv fwd + kernel grad": (
            jax.jit(jax.grad(lambda k, h: jnp.sum(jnp.tanh(conv(h, k))))),
            (k, h),
        ),
        "GroupNorm+SiLU fwd + grad": (
            jax.jit(jax.grad(lambda h, p: jnp.sum(gn_silu(p, h) ** 2))),
            (h, gv["params"]),
        ),
    }


def main():
    s, b = ARGS.size, ARGS.batch
    if ARGS.model == "ddpm":
        return report(ddpm_pieces(s, b), f"DDPM U-Net {s} px, batch {b}")
    g = Generator(image_size=s, latent_dim=100)
    d = Discriminator(image_size=s, dropout=0.0)
    z = jax.random.normal(jax.random.key(0), (b, 100))
    x = jax.random.uniform(jax.random.key(1), (b, s, s, 3)) * 2 - 1
    gv = g.init(jax.random.key(2), z, train=False)
    dv = d.init(jax.random.key(3), x, train=False)

    def g_fwd(p, z):
        out, _ = g.apply({**gv, "params": p}, z, train=True, mutable=["batch_stats"])
        return out

    d_fwd = lambda p, x: d.apply({"params": p}, x, train=False)
    pieces = {
        "G forward": (jax.jit(g_fwd), (gv["params"], z)),
        "G forward + param grad": (
            jax.jit(jax.grad(lambda p, z: jnp.mean(g_fwd(p, z) ** 2))),
            (gv["params"], z),
        ),
        "D forward": (jax.jit(d_fwd), (dv["params"], x)),
        "D forward + param grad": (
            jax.jit(jax.grad(lambda p, x: jnp.mean(d_fwd(p, x)))),
            (dv["params"], x),
        ),
        "D forward + input grad": (
            jax.jit(jax.grad(lambda x, p: jnp.mean(d_fwd(p, x)))),
            (x, dv["params"]),
        ),
    }
    return report(pieces, f"DCGAN-{s}, batch {b}")


def report(pieces: dict, title: str) -> None:
    times: dict[str, list[float]] = {k: [] for k in pieces}
    peaks = []
    for _ in range(ARGS.rounds):
        peaks.append(matmul_peak(reps=5))
        for name, (fn, args) in pieces.items():
            times[name].append(time_call(fn, args))
    peak = max(peaks)
    rows = []
    print(f"{title}; measured float32 matmul peak {peak:.1f} GFLOP/s")
    print(f"{'piece':26s} {'GFLOP':>8s} {'ms':>8s} {'GFLOP/s':>8s} {'% peak':>7s}")
    for name, (fn, args) in pieces.items():
        gflop = xla_flops(fn, args) / 1e9
        ms = 1000 * min(times[name])
        rate = gflop / (ms / 1000)
        rows.append({"piece": name, "gflop": gflop, "ms": ms, "gflops": rate,
                     "pct_peak": 100 * rate / peak})  # fmt: skip
        print(f"{name:26s} {gflop:8.2f} {ms:8.1f} {rate:8.1f} {100 * rate / peak:7.1f}")
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(
        json.dumps(
            {
                "model": title,
                "matmul_peak_gflops": peak,
                "rows": rows,
                "xla_flags": xla_flags.apply(),
            },
            indent=1,
        )
    )
    print(f"wrote {ARGS.out}")


if __name__ == "__main__":
    main()
