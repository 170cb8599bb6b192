"""Timing helpers shared by bench/mfu_breakdown.py, strided_conv_bench.py and train_bench.py.

Import after `jaxsynth.xla_flags.apply()`: importing jax here would fix XLA's flags too early.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def time_call(fn, args, n: int = 5) -> float:
    """Seconds per call of a jitted `fn(*args)`, after one warm-up call (compile excluded)."""
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    for _ in range(n):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / n


def xla_flops(fn, args) -> float:
    """Model FLOPs of one call of jitted `fn`: XLA's cost analysis of the lowered program."""
    cost = fn.lower(*args).cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Measured float32 matmul GFLOP/s (best of `reps` single calls): the practical peak."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(jnp.dot)
    return 2 * n**3 / min(time_call(f, (a, a), 1) for _ in range(reps)) / 1e9
