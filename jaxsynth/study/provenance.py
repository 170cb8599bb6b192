"""What a rerun needs to know: machine, library versions, and every seed the study used.

`jaxsynth compare` puts two runs side by side; when their verdicts differ, this block says what
else differed (a GPU vs a CPU, another jax, another seed list).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

LIBRARIES = (
    "jaxsynth",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "numpy",
    "scipy",
    "scikit-learn",
    "scikit-image",
    "ml-collections",
)


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict:
    import jax

    devices = jax.devices()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "jax_backend": jax.default_backend(),
        "devices": [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in devices],
    }


def seeds(config) -> dict:
    """Every seed that shapes the study's numbers."""
    return {
        "study_seed": config.seed,  # split, bootstrap, control-arm draws
        "generator_seeds": list(config.study.generator_seeds),  # generator seed = seed + k
        "classifier_seeds": list(config.classifier.seeds),
        "bootstrap_seed": config.seed,
    }


def provenance(config) -> dict:
    return {"machine": machine(), "libraries": library_versions(), "seeds": seeds(config)}
