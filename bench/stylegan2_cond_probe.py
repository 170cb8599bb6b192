"""Why StyleGAN2's lazy regularisers select instead of branching on CPU: the R1 penalty's
gradient of the `:study32` discriminator timed computed directly and inside `lax.cond` (predicate
true), with and without ADA.

    python bench/stylegan2_cond_probe.py [--batch 8]

XLA:CPU runs convolutions inside a conditional's branch far slower than outside one (measured
2026-12-01: 333 vs 8,591 ms per call at batch 8; BENCHMARKS.md). Prints one line per case.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--calls", type=int, default=3)
    args = ap.parse_args()

    from jaxsynth import xla_flags

    xla_flags.apply()
    import jax
    import jax.numpy as jnp

    from jaxsynth.config import load_config
    from jaxsynth.train.task import build_task

    config = load_config("stylegan2:study32")
    config.batch_size = args.batch
    task = build_task(config)
    b, size = args.batch, int(config.image_size)
    key = jax.random.key(0)
    real = jax.random.uniform(key, (b, size, size, 3)) * 2 - 1
    batch = {"image": real, "label": jnp.zeros((b,), jnp.int32)}
    dp = jax.jit(task.init)(jax.random.key(1), batch)["discriminator"].params
    p = jnp.float32(0.2)

    def r1(with_ada):
        def d(q, x):
            if with_ada:
                return task._d(q, x, None, key, p)
            return task.discriminator.apply({"params": q}, x, None)

        def grads(q):
            return jax.grad(lambda q2: (jax.grad(lambda x: d(q2, x).sum())(real) ** 2).sum())(q)

        return grads

    def zeros(q):
        return jax.tree.map(jnp.zeros_like, q)

    for with_ada in (True, False):
        f = r1(with_ada)
        cases = {
            "direct": (f, (dp,)),
            "inside lax.cond": (
                lambda q, s, f=f: jax.lax.cond(s % 16 == 0, f, zeros, q),
                (dp, jnp.int32(0)),
            ),
        }
        for name, (fn, fargs) in cases.items():
            compiled = jax.jit(fn).lower(*fargs).compile()
            jax.block_until_ready(compiled(*fargs))
            t0 = time.perf_counter()
            for _ in range(args.calls):
                out = compiled(*fargs)
            jax.block_until_ready(out)
            ms = (time.perf_counter() - t0) / args.calls * 1000
            ada = "with ADA" if with_ada else "no ADA"
            print(f"R1 gradient, batch {b}, {ada:8s} {name:16s} {ms:9.1f} ms", flush=True)


if __name__ == "__main__":
    main()
