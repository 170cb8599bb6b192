"""Cached, resumable stages keyed by the config they depend on, with verified outputs.

A study is a DAG of stages (split → train generator → sample → filter → classifier arms → report).
Each stage declares the config keys it reads and the stages it consumes; its key is a hash of
those config values and of its inputs' keys. Its outputs live in `<workdir>/stages/<name>-<key>/`.
A stage *sees* only what it declares: `ctx.config` holds its declared keys and nothing else, and
`ctx.input` / `ctx.input_dir` answer only for its declared inputs, so reading an undeclared key
fails with a line naming the stage and the key instead of silently making the cache key lie
(a value read but not hashed would let a changed config reuse a stale output). So:

* rerunning after a kill continues from the first unfinished stage and loses nothing (a stage
  works in `<name>-<key>.partial/`, kept across kills so a generator resumes from its own
  checkpoints, and is renamed into place only when it finished);
* changing a config key reruns only the stages that depend on it, directly or through inputs.

WHY the outputs are verified (make-style build caches, but by content): a `result.json` alone
says a stage once finished, not that its files are still there. At completion a stage records
every file in its directory with size and SHA-256 (`_outputs.json`, written before
`result.json`, which is the commit marker). A stage is "cached" only if its record verifies:
sizes on every run, the full hash with `verify=True` (`--verify`) and for the inputs of every
stage about to run (a dependant is about to read them). A stage that fails reruns together with
its dependants, and the runner says why in one line.

Stages write only into their own directory. What people open (the report, its figures) is
*published*: `Stage.outputs` names files or folders of the stage directory that the runner copies
into the workdir after the stage finishes and on every later run, so a deleted or edited
`report.md` is restored from the stage that made it (no rerun), and switching back to an earlier
config republishes that config's report instead of recomputing it.

What stages hand each other in memory: `ctx.load(name, loader)` reads an input's output once per
run (e.g. the split's arrays, verified by the record above instead of re-hashing every image in
every stage), and a stage that has its output in memory already offers it with `ctx.keep`.
"""

from __future__ import annotations

import copy
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
ALL_KEYS = "*"  # as a config key: the whole config (the report records it for provenance)
# Bumped when what a stage directory holds changes for the same config, so old caches are not
# mistaken for new ones. 2: the split lives in the split stage's directory; stages see only the
# keys they declare (several declare more than before).
KEY_VERSION = 2


class UndeclaredRead(RuntimeError):
    """A stage read a config key or an input it does not declare (a bug in the stage: its cache
    key would not cover what it read)."""


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
    into `ctx.dir` (nowhere else); `config_keys` are the dotted config keys it reads (a group
    name means the whole group; `ALL_KEYS` the whole config); `outputs` names files or folders of
    its directory that are published into the workdir (relative paths kept)."""

    name: str
    fn: Callable[[StageContext], dict]
    config_keys: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    extra_key: str = ""  # anything else the output depends on (e.g. the arm's seed)
    outputs: tuple[str, ...] = ()


def config_view(
    config: ml_collections.ConfigDict, keys: Sequence[str]
) -> ml_collections.ConfigDict:
    """A copy of `config` holding only `keys` (dotted; a group keeps all of its keys), locked.

    Keys declared but absent from `config` are left out (the cache key hashes them as None)."""
    if ALL_KEYS in keys:
        view = copy.deepcopy(config)
        view.lock()
        return view
    view = ml_collections.ConfigDict()
    for dotted in sorted(keys):
        parts = dotted.split(".")
        src: Any = config
        for part in parts:
            if not isinstance(src, ml_collections.ConfigDict) or part not in src:
                src = None
                break
            src = src[part]
        if src is None:
            continue
        dst = view
        for part in parts[:-1]:
            if part not in dst:
                dst[part] = ml_collections.ConfigDict()
            dst = dst[part]
        if parts[-1] not in dst:
            dst[parts[-1]] = copy.deepcopy(src)
    view.lock()
    return view


@dataclasses.dataclass
class StageContext:
    """What a running stage sees: its working dir, its declared config keys (`config`, a
    view), its declared inputs' results and dirs, and the run's in-memory outputs."""

    stage: Stage
    dir: Path
    config: ml_collections.ConfigDict
    results: dict[str, dict]
    dirs: dict[str, Path]
    memo: dict = dataclasses.field(default_factory=dict)
    runner: Any = None

    def _declared(self, name: str) -> None:
        if name != self.stage.name and name not in self.stage.inputs:
            raise UndeclaredRead(
                f"stage {self.stage.name} reads the output of {name}, which is not among its "
                f"inputs {self.stage.inputs}"
            )

    def input(self, name: str) -> dict:
        self._declared(name)
        return self.results[name]

    def input_dir(self, name: str) -> Path:
        self._declared(name)
        return self.dirs[name]

    def load(self, name: str, loader: Callable[[Path], Any]) -> Any:
        """`loader(input_dir(name))`, once per run and loader: stages share what they read."""
        self._declared(name)
        key = (name, self.dirs[name].name, loader)
        if key not in self.memo:
            self.memo[key] = loader(self.dirs[name])
        return self.memo[key]

    def keep(self, loader: Callable[[Path], Any], value: Any) -> None:
        """Offer this stage's output, already in memory, to dependants that `load` it with
        `loader` (they would read the same thing from the finished directory)."""
        self.memo[(self.stage.name, self.runner.dirs[self.stage.name].name, loader)] = value

    def for_stage(self, stage: Stage) -> StageContext:
        """The context `stage` would get (ArmGroup trains other members' stages in one call)."""
        return self.runner.context(stage, self.dir if stage is self.stage else None)

    def key_of(self, stage: Stage) -> str:
        return self.runner.key_of(stage)


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


def record_outputs(directory: Path) -> dict:
    """The `_outputs.json` record of a finished stage (written by the runner)."""
    rec: dict[str, dict[str, list]] = {"dir": {}}
    for rel in _stage_files(directory):
        p = directory / rel
        rec["dir"][rel] = [p.stat().st_size, sha256_file(p)]
    return rec


def _published_files(directory: Path, outputs: Sequence[str]) -> list[str]:
    """The stage files (relative) that `outputs` (files or folders) name."""
    files = []
    for rel in outputs:
        p = directory / rel
        if p.is_dir():
            files += [f"{rel}/{f}" for f in _stage_files(p)]
        else:
            files.append(rel)
    return files


def check_outputs(directory: Path, full: bool, declared: Sequence[str] = ()) -> str | None:
    """None if the stage's record verifies, else one line saying what is wrong.

    Sizes always; SHA-256 of the directory's files when `full`; a `declared` output (a file or
    folder the stage publishes) missing from the directory fails even without a record.
    """
    for rel in declared:
        if not (directory / rel).exists():
            return f"{directory.name}/{rel} is missing"
    try:
        result = json.loads((directory / RESULT_FILE).read_text())
        if not isinstance(result, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return f"{RESULT_FILE} unreadable ({type(e).__name__})"
    try:
        files = json.loads((directory / OUTPUTS_FILE).read_text())["dir"]
        files = {str(k): (int(v[0]), str(v[1])) for k, v in files.items()}
    except FileNotFoundError:
        return None  # made before outputs were recorded: the runner records them now
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"{OUTPUTS_FILE} unreadable ({type(e).__name__})"
    for rel, (size, digest) in sorted(files.items()):
        p = directory / rel
        shown = f"{directory.name}/{rel}"
        if not p.is_file():
            return f"{shown} is missing"
        if p.stat().st_size != size:
            return f"{shown} has {p.stat().st_size} bytes, {size} recorded"
        if full and sha256_file(p) != digest:
            return f"{shown} does not match its recorded SHA-256"
    return None


def publish(directory: Path, workdir: Path, outputs: Sequence[str]) -> list[str]:
    """Copy the stage's `outputs` into the workdir where the copy is missing or differs
    (atomically, file by file); the names copied. The stage directory stays the truth."""
    copied = []
    for rel in _published_files(directory, outputs):
        src, dst = directory / rel, workdir / rel
        if dst.is_file() and dst.stat().st_size == src.stat().st_size:
            if sha256_file(dst) == sha256_file(src):
                continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        copied.append(rel)
    return copied


def _undeclared(error: BaseException, stage: Stage, full: dict) -> str | None:
    """If `error` is a config lookup of a key the full config has but `stage` did not declare,
    the one line saying so."""
    if not isinstance(error, (AttributeError, KeyError)):
        return None
    missing = error.args[0] if error.args else None
    if isinstance(missing, KeyError):  # ConfigDict's attribute access wraps the KeyError
        missing = missing.args[0] if missing.args else None
    if not isinstance(missing, str):
        return None
    missing = missing.strip("'\"")
    found = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                path = f"{prefix}.{k}" if prefix else k
                if k == missing:
                    found.append(path)
                walk(v, path)

    walk(full, "")
    keys = stage.config_keys
    if ALL_KEYS in keys:
        return None

    def declared(path: str) -> bool:  # a key, or inside a declared group
        return any(path == k or path.startswith(k + ".") for k in keys)

    found = [path for path in found if not declared(path)]  # reads that the view lacks
    if not found:
        return None
    return (
        f"stage {stage.name} reads config key {' or '.join(found[:3])}, which is not among its "
        f"config_keys {stage.config_keys} (declare it, so the stage's cache key covers it)"
    )


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
        self.memo: dict = {}  # what stages read from their inputs, shared within this run
        self.pending: set[str] = set()  # stages this run will (re)run, from the plan
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.reasons: dict[str, str] = {}  # stage -> why a finished stage is rerun
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def key_of(self, stage: Stage) -> str:
        return stage_key(stage, self._cfg, self.keys)

    def context(self, stage: Stage, directory: Path | None = None) -> StageContext:
        """What `stage` sees when it runs in `directory` (default: its final directory)."""
        return StageContext(
            stage,
            directory or self.dirs[stage.name],
            config_view(self.config, stage.config_keys),
            self.results,
            self.dirs,
            self.memo,
            self,
        )

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
            why = check_outputs(final, self.verify, stage.outputs)
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
                    why = check_outputs(self.dirs[dep], True, by_name[dep].outputs)
                    if why:
                        self.reasons[dep] = why
                        to_run.add(dep)
            if to_run == before:
                return to_run

    def _publish(self, stage: Stage, prefix: str) -> None:
        copied = publish(self.dirs[stage.name], self.workdir, stage.outputs)
        if copied and stage.name in self.skipped:
            shown = ", ".join(copied[:3]) + (f" and {len(copied) - 3} more" if copied[3:] else "")
            self.log(f"{prefix}: {shown} restored from {self.dirs[stage.name].name}")

    def run(self, stages: Sequence[Stage]) -> dict[str, dict]:
        t_start = time.perf_counter()
        durations: list[float] = []
        to_run = self.pending = self._plan(stages)
        for i, stage in enumerate(stages, 1):
            key = self.keys[stage.name]
            final = self.dirs[stage.name]
            prefix = f"[stage {i}/{len(stages)}] {stage.name}"
            if stage.name not in to_run:
                self.results[stage.name] = json.loads((final / RESULT_FILE).read_text())
                self.skipped.append(stage.name)
                note = ""
                if not (final / OUTPUTS_FILE).is_file():
                    _write_json(final / OUTPUTS_FILE, record_outputs(final))
                    note = ", outputs recorded now"
                self.log(f"{prefix}: cached ({final.name}{note})")
                self._publish(stage, prefix)
                continue
            partial = self.root / f"{stage.name}-{key}.partial"
            if (partial / RESULT_FILE).is_file() and not check_outputs(
                partial, True, stage.outputs
            ):  # killed between finishing and the rename: only the rename is left
                result = json.loads((partial / RESULT_FILE).read_text())
                self._commit(partial, final)
                self.results[stage.name] = result
                self.ran.append(stage.name)
                self.log(f"{prefix}: finished before an interruption; moved into place")
                self._publish(stage, prefix)
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
            try:
                result = stage.fn(self.context(stage, partial)) or {}
            except (AttributeError, KeyError) as e:
                line = _undeclared(e, stage, self._cfg)
                if line is None:
                    raise
                raise UndeclaredRead(line) from e
            result = {**result, "_stage": {"name": stage.name, "key": key}}
            for rel in stage.outputs:
                if not (partial / rel).exists():
                    raise RuntimeError(f"stage {stage.name} did not write its output {rel}")
            _write_json(partial / OUTPUTS_FILE, record_outputs(partial))
            _write_json(partial / RESULT_FILE, result)  # last: the commit marker
            self._commit(partial, final)
            # paths handed out during the run pointed into .partial; results must use ctx.dir-
            # relative names, so nothing else needs rewriting.
            self.results[stage.name] = result
            self.ran.append(stage.name)
            self._publish(stage, prefix)
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
    if ALL_KEYS in stage.config_keys:
        values = {ALL_KEYS: cfg}
    else:
        values = {k: _lookup(cfg, k) for k in stage.config_keys}
    deps = {n: input_keys[n] for n in stage.inputs}
    return config_hash({"cfg": values, "deps": deps, "extra": stage.extra_key, "v": KEY_VERSION})[
        :12
    ]


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
