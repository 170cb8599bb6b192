"""Cached, resumable stages keyed by the config they depend on.

A study is a DAG of stages (split → train generator → sample → filter → classifier arms → report).
Each stage declares the config keys it reads and the stages it consumes; its key is a hash of
those config values and of its inputs' keys. Its outputs live in `<workdir>/stages/<name>-<key>/`
and a stage whose directory exists is not run again. So:

* rerunning after a kill continues from the first unfinished stage and loses nothing (a stage
  works in `<name>-<key>.partial/`, kept across kills so a generator resumes from its own
  checkpoints, and is renamed into place only when it finished);
* changing a config key reruns only the stages that depend on it, directly or through inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from jaxsynth.config import config_hash, config_to_dict

RESULT_FILE = "result.json"


def _lookup(d: dict, dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclasses.dataclass(frozen=True)
class Stage:
    """One unit of work. `fn(ctx)` returns a JSON-able dict (its result) and may write files
    into `ctx.dir`."""

    name: str
    fn: Callable[[StageContext], dict]
    config_keys: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    extra_key: str = ""  # anything else the output depends on (e.g. the arm's seed)


@dataclasses.dataclass
class StageContext:
    """What a running stage sees: its working dir, the config and its inputs' results/dirs."""

    stage: Stage
    dir: Path
    config: ml_collections.ConfigDict
    results: dict[str, dict]
    dirs: dict[str, Path]

    def input(self, name: str) -> dict:
        return self.results[name]

    def input_dir(self, name: str) -> Path:
        return self.dirs[name]


class StageRunner:
    """Runs stages in order, skipping those already finished for the same key."""

    def __init__(self, workdir: str | Path, config: ml_collections.ConfigDict, log=None):
        self.root = Path(workdir) / "stages"
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = config
        self._cfg = config_to_dict(config)
        self.keys: dict[str, str] = {}
        self.results: dict[str, dict] = {}
        self.dirs: dict[str, Path] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def key_of(self, stage: Stage) -> str:
        return stage_key(stage, self._cfg, self.keys)

    def run(self, stages: Sequence[Stage]) -> dict[str, dict]:
        t_start = time.perf_counter()
        durations: list[float] = []
        for i, stage in enumerate(stages, 1):
            if stage.name in self.keys:
                raise ValueError(f"duplicate stage name {stage.name}")
            for dep in stage.inputs:
                if dep not in self.keys:
                    raise ValueError(f"stage {stage.name} needs {dep}, which has not run yet")
            key = self.key_of(stage)
            self.keys[stage.name] = key
            final = self.root / f"{stage.name}-{key}"
            self.dirs[stage.name] = final
            prefix = f"[stage {i}/{len(stages)}] {stage.name}"
            if (final / RESULT_FILE).is_file():
                self.results[stage.name] = json.loads((final / RESULT_FILE).read_text())
                self.skipped.append(stage.name)
                self.log(f"{prefix}: cached ({final.name})")
                continue
            partial = self.root / f"{stage.name}-{key}.partial"
            partial.mkdir(parents=True, exist_ok=True)
            remaining = len(stages) - i + 1
            eta = ""
            if durations:
                eta = f", ETA ≈ {remaining * sum(durations) / len(durations):.0f}s at the mean"
            self.log(f"{prefix}: running (elapsed {time.perf_counter() - t_start:.0f}s{eta})")
            t0 = time.perf_counter()
            ctx = StageContext(stage, partial, self.config, self.results, self.dirs)
            result = stage.fn(ctx) or {}
            result = {**result, "_stage": {"name": stage.name, "key": key}}
            tmp = partial / (RESULT_FILE + ".tmp")
            tmp.write_text(json.dumps(result, indent=1, default=_json_default))
            os.replace(tmp, partial / RESULT_FILE)
            if final.exists():  # a stale dir without result.json
                import shutil

                shutil.rmtree(final)
            os.replace(partial, final)
            # paths handed out during the run pointed into .partial; results must use ctx.dir-
            # relative names, so nothing else needs rewriting.
            self.results[stage.name] = result
            self.ran.append(stage.name)
            durations.append(time.perf_counter() - t0)
            self.log(f"{prefix}: done in {durations[-1]:.1f}s")
        return self.results


def stage_key(stage: Stage, cfg: dict, input_keys: dict[str, str]) -> str:
    """A stage's cache key: its config values, its inputs' keys, its extra key."""
    values = {k: _lookup(cfg, k) for k in stage.config_keys}
    deps = {n: input_keys[n] for n in stage.inputs}
    return config_hash({"cfg": values, "deps": deps, "extra": stage.extra_key, "v": 1})[:12]


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
