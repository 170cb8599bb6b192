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


def model_flops(fn, args) -> float:
    """FLOPs of one call of jitted `fn(*args)` on any backend.

    XLA's cost analysis of this backend's lowering; when that is empty or zero (the GPU backend
    returned no FLOPs in jax 0.11), the same program lowered for the CPU (the model's FLOPs do
    not depend on the chip), else NaN."""
    try:
        flops = xla_flops(fn, args)
    except Exception:  # noqa: BLE001 - a backend without cost analysis
        flops = 0.0
    if flops > 0:
        return flops
    try:
        cpu = jax.devices("cpu")[0]
        cpu_args = jax.tree.map(lambda x: jax.device_put(x, cpu), args)
        lowered = jax.jit(fn.__wrapped__ if hasattr(fn, "__wrapped__") else fn).lower(*cpu_args)
        cost = lowered.cost_analysis() or {}
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", 0.0))
    except Exception:  # noqa: BLE001
        flops = 0.0
    return flops if flops > 0 else float("nan")
