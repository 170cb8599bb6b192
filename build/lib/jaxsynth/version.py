"""What produced a result: the package version, the libraries it ran on, the machine.

`jaxsynth --version` prints it, and every run writes it into its workdir (`environment.json`,
and the study's `results.json`), so a result or a bug report says which code and libraries
made it. Importing this module imports nothing heavy; `environment()` imports jax.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "scipy")


def package_version() -> str:
    """The installed distribution's version (the one in pyproject.toml)."""
    try:
        return metadata.version("jaxsynth")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from jaxsynth import __version__

        return __version__


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(devices: bool = True) -> dict:
    """Package, Python and library versions, the host, and (if `devices`) jax's devices."""
    env = {
        "jaxsynth": package_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": platform.node(),
        "libraries": library_versions(),
    }
    if devices:
        import jax

        env["backend"] = jax.default_backend()
        env["devices"] = [str(d) for d in jax.devices()]
        env["process_count"] = jax.process_count()
    return env


def write_environment(workdir: str | Path) -> dict:
    """`<workdir>/environment.json` (rewritten by every run in that workdir)."""
    env = environment()
    path = Path(workdir) / "environment.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(env, indent=2, sort_keys=True) + "\n")
    return env


def version_text() -> str:
    """The lines `jaxsynth --version` prints."""
    env = environment()
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
    return (
        f"jaxsynth {env['jaxsynth']} (Python {env['python']}, {sys.platform})\n"
        f"{libs}\n"
        f"backend {env['backend']}: {', '.join(env['devices'])}"
    )
