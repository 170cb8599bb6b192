"""StyleGAN2's [1,3,3,1] FIR up/down-sampling on XLA:CPU: the per-phase slice-and-add form used by
jaxsynth/models/stylegan2.py vs the two textbook lowerings (a depthwise 4×4 conv on the
zero-inserted input / a depthwise 4×4 stride-2 conv), each followed by a 3×3 conv as in the
networks, forward + backward, interleaved rounds. All variants compute the same function
(checked here before timing).

    flock /tmp/jaxsynth-heavy.lock .venv/bin/python bench/upfirdn_bench.py [--size 64]
        [--batch 32] [--channels 64] [--rounds 5] [--json bench/results/upfirdn.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from jaxsynth import xla_flags  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=64)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--channels", type=int, default=64)
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--json", default="")
ARGS = p.parse_args()
xla_flags.apply()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from jaxsynth.models.stylegan2 import downsample_2x, upsample_2x  # noqa: E402

_DN = ("NHWC", "HWIO", "NHWC")
_F = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0


def _depthwise(c: int, gain: float) -> jax.Array:
    return jnp.asarray(np.tile((_F * gain)[:, :, None, None], (1, 1, 1, c)), jnp.float32)


def up_conv(x):
    """Zero-insert (lhs dilation 2), pad (2, 1), depthwise 4×4 FIR with gain 4."""
    k = _depthwise(x.shape[-1], 4.0)
    return lax.conv_general_dilated(
        x,
        k,
        (1, 1),
        ((2, 2), (2, 2)),
        lhs_dilation=(2, 2),
        dimension_numbers=_DN,
        feature_group_count=x.shape[-1],
    )


def down_conv(x):
    """Pad 1, depthwise 4×4 FIR, stride 2."""
    k = _depthwise(x.shape[-1], 1.0)
    return lax.conv_general_dilated(
        x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN, feature_group_count=x.shape[-1]
    )


def main():
    b, s, c = ARGS.batch, ARGS.size, ARGS.channels
    x_lo = jax.random.normal(jax.random.key(0), (b, s // 2, s // 2, c))
    x_hi = jax.random.normal(jax.random.key(1), (b, s, s, c))
    w = jax.random.normal(jax.random.key(2), (3, 3, c, c)) * 0.05
    np.testing.assert_allclose(up_conv(x_lo), upsample_2x(x_lo), atol=1e-4)
    np.testing.assert_allclose(down_conv(x_hi), downsample_2x(x_hi), atol=1e-4)

    def conv(v):
        return lax.conv_general_dilated(v, w, (1, 1), "SAME", dimension_numbers=_DN)

    cases = {
        "up: phase (ours)": (lambda v: conv(upsample_2x(v)), x_lo),
        "up: depthwise conv": (lambda v: conv(up_conv(v)), x_lo),
        "down: phase (ours)": (lambda v: conv(downsample_2x(v)), x_hi),
        "down: depthwise conv": (lambda v: conv(down_conv(v)), x_hi),
    }
    fns = {}
    for name, (fn, x) in cases.items():
        g = jax.jit(jax.grad(lambda v, fn=fn: jnp.sum(jnp.tanh(fn(v)))))
        jax.block_until_ready(g(x))
        fns[name] = (g, x)
    times = {n: [] for n in cases}
    for _ in range(ARGS.rounds):
        for n, (g, x) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(g(x))
            times[n].append(time.perf_counter() - t0)
    print(f"FIR resample + 3x3 conv, fwd+bwd, batch {b}, {s}px, {c} ch, best of {ARGS.rounds}")
    print("| variant | ms |\n|---|---:|")
    rows = {n: 1000 * min(t) for n, t in times.items()}
    for n, ms in rows.items():
        print(f"| {n} | {ms:.1f} |")
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps({"args": vars(ARGS), "best_ms": rows}, indent=2))


if __name__ == "__main__":
    main()
