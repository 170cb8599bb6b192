"""Per-platform XLA flags, set in ONE place before jax initialises its backends.

On XLA:CPU (jax 0.10) convolutions inside YNNPACK fusions are slower than the Eigen path for the
GAN convs measured with bench/train_bench.py (BENCHMARKS.md); taking individual convolutions
out of YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`) sped a DCGAN
step up ~1.4× and paper 000's CNN 2×. The flag only affects the CPU backend, so it is harmless on
GPU/TPU hosts. A user's own XLA_FLAGS setting of the same flag wins; `JAXSYNTH_NO_XLA_FLAGS=1`
disables this module.
"""

from __future__ import annotations

import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def apply(extra: tuple[str, ...] = ()) -> str:
    """Add our flags to XLA_FLAGS (unless already present). Returns the resulting XLA_FLAGS.

    Warns on stderr if jax's backends are already initialised (the flags would be ignored).
    """
    if os.environ.get("JAXSYNTH_NO_XLA_FLAGS") == "1":
        return os.environ.get("XLA_FLAGS", "")
    current = os.environ.get("XLA_FLAGS", "")
    names = {f.split("=")[0] for f in current.split()}
    added = [f for f in (*CPU_FLAGS, *extra) if f.split("=")[0] not in names]
    if added:
        if _backends_initialised():
            print("jaxsynth: XLA flags set after jax initialised; ignored", file=sys.stderr)
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return os.environ["XLA_FLAGS"] if "XLA_FLAGS" in os.environ else ""


def _backends_initialised() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # private API moved: assume not initialised
        return False
