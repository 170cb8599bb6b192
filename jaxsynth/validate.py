"""Checks that run before any work: ranges and relations of a config, resume compatibility, and
strict JSON for every file other programs parse.

WHY one module: a bad value should fail in the first second with one line naming the key, not
minutes later inside Grain or XLA (`batch_size=0` was a Grain ValueError, `num_steps=-5` was
accepted and exited 0). The commands call `check_train_config` before building data; the engine
calls it again at the start of `train()` (library users get the same checks).
"""

from __future__ import annotations

import errno
import math
from collections.abc import Mapping
from typing import Any

from jaxsynth.errors import UserError


def _int_key(config: Any, key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{key}={value!r}: expected an integer")
    return value


def check_train_config(config: Any, n_devices: int | None = None) -> None:
    """num_steps ≥ 0, batch_size > 0 (and divisible by the devices), checkpoint_every ≥ 0,
    image_size > 0. Model-specific sizes are checked when the model is built
    (`model_size_error`)."""
    if _int_key(config, "num_steps") < 0:
        raise UserError(f"num_steps={config.num_steps}: must be ≥ 0")
    if _int_key(config, "batch_size") <= 0:
        raise UserError(f"batch_size={config.batch_size}: must be > 0")
    if "checkpoint_every" in config and _int_key(config, "checkpoint_every") < 0:
        raise UserError(f"checkpoint_every={config.checkpoint_every}: must be ≥ 0")
    if "image_size" in config and _int_key(config, "image_size") <= 0:
        raise UserError(f"image_size={config.image_size}: must be > 0")
    if n_devices and config.batch_size % n_devices:
        raise UserError(
            f"batch_size={config.batch_size} is not divisible by {n_devices} devices "
            f"(use a multiple of {n_devices})"
        )


def model_size_error(image_size: int, task_name: str, error: Exception) -> UserError:
    """A model that cannot be built at `image_size` raises ValueError at init; say which key."""
    text = " ".join(str(error).split())
    return UserError(
        f"image_size={image_size}: model '{task_name}' cannot be built at this size ({text})"
    )


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def changed_keys(saved: Mapping, current: Mapping) -> list[str]:
    """`key (old → new)` for every leaf that differs between two config dicts."""
    a, b = _flatten(saved), _flatten(current)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            out.append(f"{k} ({a.get(k, '<absent>')!r} → {b.get(k, '<absent>')!r})")
    return out


def resume_refused(workdir: Any, step: int, changes: list[str]) -> UserError:
    shown = ", ".join(changes[:8]) + (f", … {len(changes) - 8} more" if len(changes) > 8 else "")
    return UserError(
        f"{workdir}: cannot resume from step {step}: the model's shapes changed with the config "
        f"(changed keys: {shown or 'none found'}); use the old values, another --workdir, or "
        f"--restart to start over here (the old run is kept aside)"
    )


def strict_json(obj: Any) -> tuple[Any, list[str]]:
    """`obj` with every non-finite float replaced by None, and the dotted paths replaced.

    WHY: `json.dumps` writes bare `Infinity`/`NaN`, which strict parsers (JavaScript, jq,
    Go) reject. Callers record the list next to the values (e.g. `"nonfinite": [...]`), so
    `null` is never mistaken for "not computed".
    """
    paths: list[str] = []

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            paths.append(f"{path}={'nan' if math.isnan(x) else ('inf' if x > 0 else '-inf')}")
            return None
        if isinstance(x, Mapping):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(x)]
        return x

    return walk(obj, ""), paths


# errno values a user fixes on their side (space, permissions, a read-only mount)
_FIXABLE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


def os_error_line(error: BaseException, workdir: Any = None) -> str | None:
    """One line for a full disk / denied permission anywhere in `error`'s cause chain (Orbax
    and TensorStore wrap them), naming the path and the checkpoints still on disk; None for
    anything else (a bug keeps its traceback)."""
    seen: set[int] = set()
    e: BaseException | None = error
    found: OSError | None = None
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FIXABLE:
            found = e
            break
        e = e.__cause__ or e.__context__
    text = " ".join(str(error).split())
    if found is not None:
        what, path = _FIXABLE[found.errno], found.filename
    elif "No space left on device" in text:
        what, path = "no space left on device", None
    else:
        return None
    line = f"{what}" + (f": {path}" if path else "")
    if workdir is not None:
        from pathlib import Path

        ckpt = Path(workdir) / "checkpoints"
        steps = (
            sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []
        )
        line += (
            f"; checkpoints on disk in {ckpt}: steps {', '.join(map(str, steps))} "
            f"(rerun the same command to resume once fixed)"
            if steps
            else f"; no checkpoints in {workdir} yet"
        )
    return line
