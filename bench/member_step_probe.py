"""Is the member axis' cost in the vmapped step itself? Gradient of the paper CNN (32 px, batch
32) plain vs vmapped over M stacked parameter sets (what `train/members.py` compiles), on the
current backend; prints ms per call (mean of 30 after one warm-up).

    python bench/member_step_probe.py [--members 1,4,16]

WHY a probe of its own: `bench/members_bench.py` times whole trainings, where a short run's
per-call costs (evaluation, variable gathering) can hide what the step alone costs.
"""

import argparse
import time

from jaxsynth import xla_flags

xla_flags.apply()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxsynth.models.classifier import build  # noqa: E402


def timed(fn, *args, n: int = 30) -> float:
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(n):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--members", default="1,4,16")
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args()
    model = build("paper_cnn", 32)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (a.batch, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, a.batch), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x[:1])

    def loss(p, x, y):
        logit = model.apply(p, x, train=False).reshape(-1)
        return optax.sigmoid_binary_cross_entropy(logit, y).mean()

    plain = timed(jax.jit(jax.grad(loss)), params, x, y)
    print(f"backend {jax.default_backend()}: plain gradient {plain:.1f} ms")
    print("| M | vmapped gradient ms | M x plain ms | ratio |\n|---:|---:|---:|---:|")
    for m in (int(v) for v in a.members.split(",")):
        stacked = jax.tree.map(lambda v, m=m: jnp.stack([v] * m), params)
        xs, ys = jnp.stack([x] * m), jnp.stack([y] * m)
        ms = timed(jax.jit(jax.vmap(jax.grad(loss))), stacked, xs, ys)
        print(f"| {m} | {ms:.1f} | {m * plain:.1f} | {ms / (m * plain):.2f} |")


if __name__ == "__main__":
    main()
