"""Per-platform XLA flags and the persistent compilation cache, set in ONE place before jax
initialises its backends.

On XLA:CPU (jax 0.10) convolutions inside YNNPACK fusions are slower than the Eigen path for the
GAN convs measured with bench/train_bench.py (BENCHMARKS.md); taking individual convolutions
out of YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`) sped a DCGAN
step up ~1.4× and paper 000's CNN 2×. The flag only affects the CPU backend, so it is harmless on
GPU/TPU hosts. A user's own XLA_FLAGS setting of the same flag wins; `JAXSYNTH_NO_XLA_FLAGS=1`
disables the flags.

The commands (`jaxsynth run/train/sample/sd`) also turn on jax's persistent compilation cache
(`apply(compile_cache=True)`): a study is many processes over time — a rerun after a kill, a
changed config that reruns some stages, a sweep, the next seed — and on XLA:CPU each distinct
train step costs seconds to minutes of compile (StyleGAN2's three phase programs: 196 s) that
the cache pays once per machine. jax keys each entry on the program, the XLA flags, the backend
and the jax/jaxlib versions, so a cached executable is the one a fresh compile would produce
(results are unchanged; tests/test_engine_cli.py). Location: `$JAXSYNTH_COMPILATION_CACHE` (a
path, or `off`), else `$XDG_CACHE_HOME/jaxsynth/xla` (`~/.cache/jaxsynth/xla`); a user's own
`JAX_COMPILATION_CACHE_DIR` wins. Capped at `CACHE_MAX_BYTES`, least recently used first out.
Benchmarks do not call it: they time compiles.
"""

from __future__ import annotations

import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
CACHE_ENV = "JAXSYNTH_COMPILATION_CACHE"
CACHE_OFF = ("0", "off", "none", "false", "no")
CACHE_MAX_BYTES = 4 << 30  # a study's programs take tens of MB; 4 GiB holds many configs


def apply(extra: tuple[str, ...] = (), compile_cache: bool = False) -> str:
    """Add our flags to XLA_FLAGS (unless already present). Returns the resulting XLA_FLAGS.

    `compile_cache=True` (the commands) also turns on the persistent compilation cache (module
    docstring). Warns on stderr if jax's backends are already initialised (the flags would be
    ignored).
    """
    flags = _apply_flags(extra)
    if compile_cache:
        enable_compilation_cache()
    return flags


def _apply_flags(extra: tuple[str, ...]) -> str:
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


def compilation_cache_dir() -> str | None:
    """Where the commands cache compiled programs (None: off), from the environment alone."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in CACHE_OFF:
        return None
    if value:
        return os.path.expanduser(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxsynth", "xla")


def enable_compilation_cache() -> str | None:
    """Point jax's persistent compilation cache at `compilation_cache_dir()` unless the user set
    jax's own cache directory. Returns the directory in use (None: no cache).

    Safe after `import jax` and after backends started: jax reads the setting at the first
    compile. Entries are written only for programs that took ≥ 1 s to compile (jax's default),
    so the many tiny helper programs do not churn the disk.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR or the caller's own
        return jax.config.jax_compilation_cache_dir
    path = compilation_cache_dir()
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if jax.config.jax_compilation_cache_max_size == -1:
        try:  # jax's size cap needs filelock (a transformers dependency, so normally present)
            import filelock  # noqa: F401
        except ImportError:
            return path
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return path


def _backends_initialised() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # private API moved: assume not initialised
        return False
