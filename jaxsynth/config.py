"""Loading `ml_collections` configs, with `--config.a.b=value` overrides.

A config is a Python module defining `get_config(arg: str | None)`. The named configs ship with
the package as `jaxsynth.configs` (the repository's top-level `configs/` folder, mapped into the
wheel), so `dcgan:smoke` works from any directory and from any install. A config is named on the
command line as `dcgan:smoke` (a named config), `path/to/mine.py:smoke` (a file of the user's),
or `configs/dcgan.py:smoke` (the repository's file; the shipped copy when run elsewhere).

Conventions every config follows:

* `:smoke` gives a tiny version that runs in seconds on a CPU; `:paper` the seed paper's
  settings. Each config declares its variants once, as `VARIANTS = Variants(...)`, and parses its
  argument with it (one parser for all configs; `jaxsynth configs` lists them).
* top-level keys `seed`, `image_size`, `batch_size`, `num_steps`, `checkpoint_every` and
  `data.source` mean the same everywhere (see `base_config`).
* configs are built from configs: a study nests whole model configs (`c.gen.dcgan =
  dcgan.get_config("study32")`), so every key of every model is overridable by its full dotted
  name (`--config.gen.dcgan.optim.g_lr=1e-4`).

Overrides are type-checked against the value already in the config: an unknown key or a value
of the wrong type is a one-line `UserError` naming the key.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import re
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

from jaxsynth.errors import UserError

CONFIG_PACKAGE = "jaxsynth.configs"


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


@dataclasses.dataclass(frozen=True)
class Variants:
    """The arguments a config accepts: at most one preset (`smoke`, `paper`, ...) and any number
    of modifiers after it, comma-separated (`smoke,class`). A modifier is a literal name or a
    pattern with one `<placeholder>` (`label=<class>`, `i<N>`)."""

    presets: tuple[str, ...]
    modifiers: tuple[str, ...] = ()

    def _matches(self, pattern: str, text: str) -> bool:
        if "<" not in pattern:
            return text == pattern
        regex = (
            re.escape(pattern[: pattern.index("<")])
            + ".+"
            + re.escape(pattern[pattern.index(">") + 1 :])
        )
        return re.fullmatch(regex, text) is not None

    def parse(self, arg: str | None) -> tuple[str | None, list[str]]:
        """`(preset or None, [modifiers])`; ValueError naming the accepted forms otherwise."""
        parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
        presets = [p for p in parts if p in self.presets]
        mods = [p for p in parts if p not in self.presets]
        bad = [m for m in mods if not any(self._matches(pat, m) for pat in self.modifiers)]
        if bad or len(presets) > 1:
            raise ValueError(f"unknown variant '{arg}' ({self.describe()})")
        return (presets[0] if presets else None), mods

    def describe(self) -> str:
        text = " | ".join(self.presets) or "no presets"
        if self.modifiers:
            text += "; then " + " | ".join(self.modifiers)
        return text


def named_configs() -> dict[str, ModuleType]:
    """Every shipped config module that defines `get_config`, by name."""
    from importlib import resources

    out = {}
    for entry in sorted(resources.files(CONFIG_PACKAGE).iterdir(), key=lambda e: e.name):
        name = entry.name.removesuffix(".py")
        if not entry.name.endswith(".py") or name.startswith("_"):
            continue
        module = importlib.import_module(f"{CONFIG_PACKAGE}.{name}")
        if hasattr(module, "get_config"):
            out[name] = module
    return out


def _module_from_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"jaxsynth_user_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _named_module(name: str) -> ModuleType | None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name.startswith("_"):
        return None
    try:
        return importlib.import_module(f"{CONFIG_PACKAGE}.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"{CONFIG_PACKAGE}.{name}":
            return None
        raise


def resolve_config_module(spec: str) -> tuple[ModuleType, str | None, str]:
    """`spec` (`name[:arg]` or `path.py[:arg]`) -> (module, arg, where it came from).

    A file path the user gives wins; `configs/<name>.py` that is not a file here (the program
    runs outside the checkout) is the shipped config of that name; a bare name is `./name.py`
    if that file exists, else the shipped config.
    """
    path_part, _, arg = spec.partition(":")
    arg = arg or None
    path = Path(path_part)
    if path_part.endswith(".py"):
        if path.is_file():
            return _module_from_file(path), arg, str(path)
        # `configs/x.py` or a bare `x.py` that is not here: the shipped config of that name
        bare = path.parent == Path(".") or path.parent.name == "configs"
        module = _named_module(path.stem) if bare else None
    else:
        if Path(path_part + ".py").is_file():
            return _module_from_file(Path(path_part + ".py")), arg, path_part + ".py"
        module = _named_module(path_part)
    if module is None:
        names = ", ".join(named_configs())
        raise UserError(f"config file not found: {path_part} (not a file; named configs: {names})")
    return module, arg, f"{module.__name__}"


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Load `spec` (`name[:arg]` or `file.py[:arg]`), call its `get_config(arg)`, apply
    `overrides`."""
    module, arg, where = resolve_config_module(spec)
    if not hasattr(module, "get_config"):
        raise UserError(f"{where}: defines no get_config(arg)")
    try:
        config = module.get_config(arg)
    except ValueError as e:  # configs raise ValueError for an unknown variant
        raise UserError(f"{where}: {e}") from None
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
