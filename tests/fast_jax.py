"""Compile-time settings shared by the compile-heavy tests (engine, GANs, multi-process).

`configure()` — call it before jax is imported — points jax at a persistent XLA compilation
cache shared by the test processes and their subprocesses (identical programs compile once) and
adds fast-compile XLA flags. Runs that are compared with each other always share these flags,
so equality checks are unaffected. Subprocess-spawning tests pass `CACHE` and `FAST_COMPILE` on.
"""

import os
import sys
import tempfile

CACHE = os.path.join(tempfile.gettempdir(), "jaxsynth-test-jax-cache")
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def configure() -> None:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE).strip()
    import jax

    jax.config.update("jax_compilation_cache_dir", CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
