"""Cached, resumable stages keyed by the config they depend on, with verified outputs.

A study is a DAG of stages (split → train generator → sample → filter → classifier arms → report).
Each stage declares the config keys it reads and the stages it consumes; its key is a hash of
those config values and of its inputs' keys. Its outputs live in `<workdir>/stages/<name>-<key>/`.
So:

* rerunning after a kill continues from the first unfinished stage and loses nothing (a stage
  works in `<name>-<key>.partial/`, kept across kills so a generator resumes from its own
  checkpoints, and is renamed into place only when it finished);
* changing a config key reruns only the stages that depend on it, directly or through inputs.

WHY the outputs are verified (make-style build caches, but by content): a `result.json` alone
says a stage once finished, not that its files are still there. At completion a stage records
every file in its directory, and the workdir files it declares (`Stage.outputs`, e.g. the
report), with size and SHA-256 (`_outputs.json`, written before `result.json`, which is the
commit marker). A stage is "cached" only if its record verifies: sizes on every run, the full
hash with `verify=True` (`--verify`), for declared workdir outputs (small, and read by people),
and for the inputs of every stage about to run (a dependant is about to read them). A stage that
fails rerun together with its dependants, and the runner says why in one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from jaxsynth.config import config_hash, config_to_dict

RESULT_FILE = "result.json"
OUTPUTS_FILE = "_outputs.json"  # the record of every output file: size + SHA-256


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
    into `ctx.dir`; `outputs` names files it writes into the workdir itself (relative paths),
    which are recorded and verified like the files in its directory."""

    name: str
    fn: Callable[[StageContext], dict]
    config_keys: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    extra_key: str = ""  # anything else the output depends on (e.g. the arm's seed)
    outputs: tuple[str, ...] = ()


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stage_files(directory: Path) -> list[str]:
    """Every regular file under `directory` (relative, sorted), minus the two record files."""
    out = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_file() and not p.is_symlink() and rel not in (RESULT_FILE, OUTPUTS_FILE):
            out.append(rel)
    return out


def record_outputs(directory: Path, workdir: Path, outputs: Sequence[str]) -> dict:
    """The `_outputs.json` record of a finished stage (written by the runner)."""
    rec: dict[str, dict[str, list]] = {"dir": {}, "workdir": {}}
    for rel in _stage_files(directory):
        p = directory / rel
        rec["dir"][rel] = [p.stat().st_size, sha256_file(p)]
    for rel in outputs:
        p = workdir / rel
        if p.is_file():
            rec["workdir"][rel] = [p.stat().st_size, sha256_file(p)]
    return rec


def check_outputs(
    directory: Path, workdir: Path, full: bool, declared: Sequence[str] = ()
) -> str | None:
    """None if the stage's record verifies, else one line saying what is wrong.

    Sizes always; SHA-256 of the directory's files when `full`; workdir outputs always in full;
    a `declared` workdir output that is missing fails even without a record.
    """
    for rel in declared:
        if not (workdir / rel).is_file():
            return f"{rel} is missing"
    try:
        result = json.loads((directory / RESULT_FILE).read_text())
        if not isinstance(result, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return f"{RESULT_FILE} unreadable ({type(e).__name__})"
    try:
        rec = json.loads((directory / OUTPUTS_FILE).read_text())
        parts = {"dir": rec["dir"], "workdir": rec["workdir"]}
    except FileNotFoundError:
        return None  # made before outputs were recorded: the runner records them now
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{OUTPUTS_FILE} unreadable ({type(e).__name__})"
    for where, base in (("dir", directory), ("workdir", workdir)):
        for rel, (size, digest) in sorted(parts[where].items()):
            p = base / rel
            shown = rel if where == "workdir" else f"{directory.name}/{rel}"
            if not p.is_file():
                return f"{shown} is missing"
            if p.stat().st_size != size:
                return f"{shown} has {p.stat().st_size} bytes, {size} recorded"
            if (full or where == "workdir") and sha256_file(p) != digest:
                return f"{shown} does not match its recorded SHA-256"
    return None


class StageRunner:
    """Runs stages in order, skipping those finished for the same key whose outputs verify."""

    def __init__(
        self, workdir: str | Path, config: ml_collections.ConfigDict, log=None, verify=False
    ):
        self.workdir = Path(workdir)
        self.root = self.workdir / "stages"
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = config
        self._cfg = config_to_dict(config)
        self.verify = bool(verify)
        self.keys: dict[str, str] = {}
        self.results: dict[str, dict] = {}
        self.dirs: dict[str, Path] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.reasons: dict[str, str] = {}  # stage -> why a finished stage is rerun
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def key_of(self, stage: Stage) -> str:
        return stage_key(stage, self._cfg, self.keys)

    def _plan(self, stages: Sequence[Stage]) -> set[str]:
        """Names of the stages to run: unfinished ones, finished ones whose outputs fail to
        verify (`self.reasons`), and everything downstream of them."""
        by_name = {s.name: s for s in stages}
        for stage in stages:
            if stage.name in self.keys:
                raise ValueError(f"duplicate stage name {stage.name}")
            for dep in stage.inputs:
                if dep not in self.keys:
                    raise ValueError(f"stage {stage.name} needs {dep}, which has not run yet")
            key = self.key_of(stage)
            self.keys[stage.name] = key
            self.dirs[stage.name] = self.root / f"{stage.name}-{key}"
        to_run: set[str] = set()
        full_checked: set[str] = set()
        for stage in stages:
            final = self.dirs[stage.name]
            if not (final / RESULT_FILE).is_file():
                to_run.add(stage.name)
                continue
            why = check_outputs(final, self.workdir, self.verify, stage.outputs)
            if self.verify:
                full_checked.add(stage.name)
            if why:
                self.reasons[stage.name] = why
                to_run.add(stage.name)
        while True:
            before = set(to_run)
            for stage in stages:  # downstream of a rerun reruns (stages are in order)
                if stage.name not in to_run:
                    bad = [d for d in stage.inputs if d in to_run]
                    if bad:  # only a finished stage can have a rerun input with its own key
                        self.reasons.setdefault(stage.name, f"its input {bad[0]} is rerun")
                        to_run.add(stage.name)
            for name in sorted(to_run):  # a dependant is about to read these: hash in full
                for dep in by_name[name].inputs:
                    if dep in to_run or dep in full_checked:
                        continue
                    full_checked.add(dep)
                    why = check_outputs(self.dirs[dep], self.workdir, True, by_name[dep].outputs)
                    if why:
                        self.reasons[dep] = why
                        to_run.add(dep)
            if to_run == before:
                return to_run

    def run(self, stages: Sequence[Stage]) -> dict[str, dict]:
        t_start = time.perf_counter()
        durations: list[float] = []
        to_run = self._plan(stages)
        for i, stage in enumerate(stages, 1):
            key = self.keys[stage.name]
            final = self.dirs[stage.name]
            prefix = f"[stage {i}/{len(stages)}] {stage.name}"
            if stage.name not in to_run:
                self.results[stage.name] = json.loads((final / RESULT_FILE).read_text())
                self.skipped.append(stage.name)
                note = ""
                if not (final / OUTPUTS_FILE).is_file():
                    _write_json(
                        final / OUTPUTS_FILE, record_outputs(final, self.workdir, stage.outputs)
                    )
                    note = ", outputs recorded now"
                self.log(f"{prefix}: cached ({final.name}{note})")
                continue
            partial = self.root / f"{stage.name}-{key}.partial"
            if (partial / RESULT_FILE).is_file() and not check_outputs(
                partial, self.workdir, True, stage.outputs
            ):  # killed between finishing and the rename: only the rename is left
                result = json.loads((partial / RESULT_FILE).read_text())
                self._commit(partial, final)
                self.results[stage.name] = result
                self.ran.append(stage.name)
                self.log(f"{prefix}: finished before an interruption; moved into place")
                continue
            partial.mkdir(parents=True, exist_ok=True)
            remaining = len(stages) - i + 1
            eta = ""
            if durations:
                eta = f", ETA ≈ {remaining * sum(durations) / len(durations):.0f}s at the mean"
            why = f"; rerun: {self.reasons[stage.name]}" if stage.name in self.reasons else ""
            self.log(f"{prefix}: running (elapsed {time.perf_counter() - t_start:.0f}s{eta}{why})")
            t0 = time.perf_counter()
            for name in (RESULT_FILE, OUTPUTS_FILE):  # a half-committed earlier attempt
                (partial / name).unlink(missing_ok=True)
            ctx = StageContext(stage, partial, self.config, self.results, self.dirs)
            result = stage.fn(ctx) or {}
            result = {**result, "_stage": {"name": stage.name, "key": key}}
            _write_json(
                partial / OUTPUTS_FILE, record_outputs(partial, self.workdir, stage.outputs)
            )
            _write_json(partial / RESULT_FILE, result)  # last: the commit marker
            self._commit(partial, final)
            # paths handed out during the run pointed into .partial; results must use ctx.dir-
            # relative names, so nothing else needs rewriting.
            self.results[stage.name] = result
            self.ran.append(stage.name)
            durations.append(time.perf_counter() - t0)
            self.log(f"{prefix}: done in {durations[-1]:.1f}s")
        return self.results

    @staticmethod
    def _commit(partial: Path, final: Path) -> None:
        if final.exists():  # a stale or damaged dir: replaced by the verified new one
            shutil.rmtree(final)
        os.replace(partial, final)


def _write_json(path: Path, obj: Any) -> None:
    """Atomic write (tmp + rename), strict JSON: a killed write leaves the old file or none."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    os.replace(tmp, path)


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
