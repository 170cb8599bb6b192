"""The 4×4 stride-2 transposed conv on XLA:CPU: phase vs vjp vs lax (flax nn.ConvTranspose's
lowering), forward + backward through DCGAN's generator stack, interleaved rounds.

    python bench/conv_transpose_bench.py [--size 64] [--batch 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from jaxsynth import xla_flags  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=64)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--impls", default="phase,vjp,lax")
p.add_argument("--no-xla-flags", action="store_true")
ARGS = p.parse_args()
if not ARGS.no_xla_flags:
    xla_flags.apply()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxsynth.models.gan import Generator  # noqa: E402


def make(impl):
    g = Generator(image_size=ARGS.size, latent_dim=100, upsample_impl=impl)
    z = jax.random.normal(jax.random.PRNGKey(0), (ARGS.batch, 100))
    v = g.init(jax.random.PRNGKey(1), z, train=False)

    def loss(params):
        out, _ = g.apply({**v, "params": params}, z, train=True, mutable=["batch_stats"])
        return jnp.mean(out**2)

    f = jax.jit(jax.grad(loss))
    jax.block_until_ready(f(v["params"]))
    return lambda: jax.block_until_ready(f(v["params"]))


def main():
    impls = ARGS.impls.split(",")
    fns = {i: make(i) for i in impls}
    times = {i: [] for i in impls}
    for _ in range(ARGS.rounds):
        for i in impls:
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    flags = "" if ARGS.no_xla_flags else xla_flags.apply()
    print(f"G fwd+bwd, {ARGS.size}px batch {ARGS.batch}, XLA_FLAGS={flags!r}")
    for i in impls:
        print(f"{i:6s} best {min(times[i]):.3f}s  all {[round(t, 3) for t in times[i]]}")


if __name__ == "__main__":
    main()
