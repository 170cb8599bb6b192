"""Loading `ml_collections` configs from Python files, with `--config.a.b=value` overrides.

Configs live in `configs/<name>.py` and define `get_config(arg: str | None)`. A config is named
on the command line as `configs/dcgan.py`, `configs/dcgan.py:smoke`, or just `dcgan:smoke` (looked
up in the repository's `configs/` folder). Conventions every config follows:

* `:smoke` gives a tiny version that runs in seconds on a CPU; `:paper` the seed paper's settings.
* top-level keys `seed`, `image_size`, `batch_size`, `num_steps`, `checkpoint_every` and
  `data.source` mean the same everywhere (see `base_config`).

Overrides are type-checked against the value already in the config: an unknown key or a value
of the wrong type is a one-line `UserError` naming the key.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ml_collections

from jaxsynth.errors import UserError

REPO_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def base_config() -> ml_collections.ConfigDict:
    """The keys shared by every config, with their meaning fixed project-wide."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # master seed: data split, init, sampling all derive from it
    c.image_size = 64  # working resolution (square), pixels
    c.batch_size = 64  # global batch size (summed over all devices and hosts)
    c.num_steps = 1000  # optimiser steps
    c.checkpoint_every = 500  # steps between periodic checkpoints
    c.data = ml_collections.ConfigDict()
    # `phantom`, `folder:<dir>`, `pcam_h5:<dir>`, `kaggle_pcam:<dir>`, `tfds:<name>@<data_dir>`
    c.data.source = "phantom"
    return c


def resolve_config_path(spec: str) -> tuple[Path, str | None]:
    """Split `path/to/x.py:arg` (or `x:arg`) into a file path and the argument."""
    path_part, _, arg = spec.partition(":")
    arg = arg or None
    candidates = [Path(path_part)]
    if not path_part.endswith(".py"):
        candidates += [Path(path_part + ".py"), REPO_CONFIG_DIR / (path_part + ".py")]
    else:
        candidates.append(REPO_CONFIG_DIR / Path(path_part).name)
    for c in candidates:
        if c.is_file():
            return c, arg
    raise UserError(f"config file not found: {path_part} (looked in . and {REPO_CONFIG_DIR})")


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Load `spec` (`file.py[:arg]`), call its `get_config(arg)`, apply `overrides`."""
    path, arg = resolve_config_path(spec)
    module_name = f"jaxsynth_config_{path.stem}"
    spec_obj = importlib.util.spec_from_file_location(module_name, path)
    if spec_obj is None or spec_obj.loader is None:
        raise UserError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec_obj)
    spec_obj.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UserError(f"{path}: defines no get_config(arg)")
    try:
        config = module.get_config(arg)
    except ValueError as e:  # configs raise ValueError for an unknown variant
        raise UserError(f"{path}: {e}") from None
    config = ml_collections.ConfigDict(config)
    apply_overrides(config, overrides)
    return config


def _parse_value(key: str, text: str, current: Any) -> Any:
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise UserError(f"--config.{key}={text}: expected a boolean (true/false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise UserError(f"--config.{key}={text}: expected an integer") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise UserError(f"--config.{key}={text}: expected a number") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(v.strip() for v in text.split(",") if v.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    # None or other: best-effort literal, else the raw string
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Apply `a.b=value` (or `--config.a.b=value`) strings to `config` in place."""
    for item in overrides:
        text = item[len("--config.") :] if item.startswith("--config.") else item
        if "=" not in text:
            raise UserError(f"override '{item}' must look like --config.key=value")
        key, value_text = text.split("=", 1)
        parts = key.split(".")
        node = config
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node, ml_collections.ConfigDict) or p not in node:
                raise UserError(
                    f"unknown config key '{'.'.join(parts[: i + 1])}' in --config.{key}"
                )
            node = node[p]
        leaf = parts[-1]
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise UserError(f"unknown config key '{key}' in --config.{key}")
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise UserError(f"config key '{key}' is a group; set one of its fields instead")
        value = _parse_value(key, value_text, current)
        try:
            node[leaf] = value
        except TypeError as e:
            raise UserError(f"--config.{key}={value_text}: wrong type ({e})") from None


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))


def config_hash(config: ml_collections.ConfigDict | dict, keys: Iterable[str] | None = None) -> str:
    """Short stable hash of a config (or of some of its top-level keys)."""
    d = config_to_dict(config) if isinstance(config, ml_collections.ConfigDict) else config
    if keys is not None:
        d = {k: d.get(k) for k in keys}
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
