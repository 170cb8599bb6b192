"""Orbax checkpoints of a run: the whole TrainState, the Grain iterator state, and the config.

Layout: `<workdir>/checkpoints/<step>/{state, data_iter, config}`. Orbax writes each step into a
temporary directory and renames it when complete, so a run killed at any instant (even SIGKILL
in the middle of a save) leaves only complete checkpoints; `latest_step()` ignores partial ones.
The data iterator position is saved with Grain's own Orbax handler (one JSON file per process,
so every host of a multi-host run resumes its own shard), which is what makes resume exact: the
resumed run sees the same batches, the same `fold_in(rng, step)` keys and the same optimiser
state as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from jaxsynth.train.state import TrainState

STATE, DATA, CONFIG = "state", "data_iter", "config"


class RunCheckpointer:
    """Keep-N synchronous checkpoints of (state, data iterator, config) under `workdir`."""

    def __init__(self, workdir: str | Path, keep: int = 3):
        self.directory = Path(workdir).resolve() / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, int(keep)),
            create=True,
            enable_async_checkpointing=False,  # a save returns only once it is on disk
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=(STATE, DATA, CONFIG),
            item_handlers={
                STATE: ocp.StandardCheckpointHandler(),
                DATA: grain.checkpoint.CheckpointHandler(),
                CONFIG: ocp.JsonCheckpointHandler(),
            },
            options=options,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, state: TrainState, data_iter: Any | None, config: dict) -> int:
        """Save at `state.step` (blocking). Returns the step."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return step
        items = {STATE: ocp.args.StandardSave(state), CONFIG: ocp.args.JsonSave(config)}
        if data_iter is not None:
            items[DATA] = grain.checkpoint.CheckpointSave(data_iter)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        self.manager.wait_until_finished()
        return step

    def restore(self, abstract_state: Any, data_iter: Any | None, step: int | None = None):
        """Restore `(state, data_iter)` at `step` (default latest) onto `abstract_state`'s
        shapes, dtypes and shardings (from `jax.eval_shape` + the replicated sharding)."""
        step = self.latest_step() if step is None else step
        items = {STATE: ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items[DATA] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored[STATE], (restored[DATA] if data_iter is not None else None)

    def restore_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        path = self.directory / str(step) / CONFIG / "metadata"
        if path.is_file():
            return json.loads(path.read_text())
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()})
        )
        return restored[CONFIG]

    def newest_config(self) -> tuple[int, dict] | None:
        """(step, saved config) of the newest step whose config reads, or None."""
        for step in sorted(self.all_steps(), reverse=True):
            try:
                return step, self.restore_config(step)
            except Exception:  # noqa: BLE001 - a damaged step: the restore falls back past it
                continue
        return None

    def restore_newest_intact(
        self, abstract_state: Any, data_iter: Any | None, log: Callable[[str], None]
    ) -> tuple[Any, Any, int] | None:
        """`(state, data_iter, step)` from the newest step that restores, None without any.

        Damaged newer steps are set aside with one line each. If every step fails: a
        `UserError` listing them (the manager is closed first, so no Orbax thread outlives it).
        """
        from jaxsynth.errors import UserError

        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            return None
        damaged: list[tuple[int, str]] = []
        for step in steps:
            try:
                state, it = self.restore(abstract_state, data_iter, step)
            except Exception as e:  # noqa: BLE001 - any read/validation error means damage
                damaged.append((step, first_line(e)))
                continue
            for bad, why in damaged:
                where = self.set_aside(bad)
                log(
                    f"checkpoint step {bad} is damaged ({why}); moved to {where}; using step {step}"
                )
            return state, it, step
        self.close()
        listed = "; ".join(f"step {s}: {why}" for s, why in damaged)
        raise UserError(
            f"{self.directory}: no intact checkpoint ({listed}); start over with --restart "
            f"(keeps the old files) or another --workdir"
        )

    def set_aside(self, step: int) -> Path:
        """Move a damaged step out of the manager's directory; returns where it went."""
        dest_dir = self.directory.parent / "damaged_checkpoints"
        dest_dir.mkdir(exist_ok=True)
        dest = dest_dir / f"{step}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        os.replace(self.directory / str(step), dest)
        self.manager.reload()
        return dest

    def close(self) -> None:
        if not getattr(self, "_closed", False):
            self._closed = True
            self.manager.close()


class NoCheckpoints:
    """The checkpointer of a scratch run (`train(..., scratch=True)`): holds nothing, saves
    nothing, so the run starts fresh every time."""

    def __init__(self, workdir: Path) -> None:
        self.directory = Path(workdir)

    def all_steps(self) -> list[int]:
        return []

    def latest_step(self) -> None:
        return None

    def save(self, state, data_iter, config) -> None:
        pass

    def close(self) -> None:
        pass


def resume(
    ckpt: RunCheckpointer,
    abstract_state: Any,
    data_iter: Any | None,
    cfg_dict: dict,
    saved_abstract: Callable[[dict], Any],
    log: Callable[[str], None],
) -> tuple[Any, Any, int] | None:
    """`(state, data_iter, step)` to resume from, or None when `ckpt` holds no checkpoint.

    Before restoring, the saved config's state shapes (`saved_abstract(saved_cfg)`) are compared
    with this run's: a changed shape is a one-line refusal listing the changed config keys (an
    Orbax tree mismatch would otherwise look like damage). Then the newest intact step is used.
    """
    from jaxsynth.config import config_hash
    from jaxsynth.validate import changed_keys, resume_refused

    if not ckpt.all_steps():
        return None
    newest = ckpt.newest_config()
    note = ""
    if newest is not None and config_hash(newest[1]) != config_hash(cfg_dict):
        note = " (config changed)"
        try:
            old = saved_abstract(newest[1])
        except Exception:  # noqa: BLE001 - the saved config no longer builds: shapes unknown
            old = None
        if old is None or not same_shapes(old, abstract_state):
            ckpt.close()
            raise resume_refused(
                ckpt.directory.parent, newest[0], changed_keys(newest[1], cfg_dict)
            )
    state, data_iter, step = ckpt.restore_newest_intact(abstract_state, data_iter, log)
    log(f"resuming from step {step} in {ckpt.directory}{note}")
    return state, data_iter, step


def abstract_state(task: Any, rng: Any, sample_batch: dict, sharding: Any, image_size: int) -> Any:
    """The state's shapes and dtypes on `sharding` (no compute). A model that cannot be built at
    this size raises ValueError at init: a one-line error naming image_size instead."""
    from jaxsynth.validate import model_size_error

    try:
        shapes = jax.eval_shape(task.init, rng, sample_batch)
    except ValueError as e:
        raise model_size_error(image_size, task.name, e) from None
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def same_shapes(a: Any, b: Any) -> bool:
    """The same leaf paths with the same shape and dtype (static fields such as the optimiser
    object differ between two builds of one config and do not matter to a restore)."""

    def leaves(tree: Any) -> list:
        flat, _ = jax.tree_util.tree_flatten_with_path(tree)
        return [(jax.tree_util.keystr(p), tuple(x.shape), str(x.dtype)) for p, x in flat]

    return leaves(a) == leaves(b)


def first_line(e: BaseException) -> str:
    """`Type: first line of the message` (≤ 160 characters): enough to say what broke."""
    text = next((x.strip() for x in str(e).splitlines() if x.strip()), "")
    return f"{type(e).__name__}: {text}"[:160]


def has_checkpoint(workdir: str | Path) -> bool:
    d = Path(workdir) / "checkpoints"
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def load_trained(workdir: str | Path, step: int | None = None, log=None):
    """`(task, state, config, step)` from a run directory, for sampling / evaluation.

    Rebuilds the task from the config saved in the checkpoint, restores the TrainState
    (replicated on this host's mesh), and ignores the data iterator. Without `step`, a damaged
    newest checkpoint falls back to the newest intact one (`log` says so).
    """
    import sys

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    import ml_collections
    import numpy as np

    from jaxsynth.errors import UserError
    from jaxsynth.train.mesh import make_mesh, replicated
    from jaxsynth.train.task import build_task

    if not has_checkpoint(workdir):
        raise UserError(f"--workdir {workdir}: no checkpoints (train there first)")
    ckpt = RunCheckpointer(workdir)
    try:
        explicit = step is not None
        if explicit and step not in ckpt.all_steps():
            raise UserError(f"--workdir {workdir}: no checkpoint at step {step}")
        try:
            saved = ckpt.restore_config(step) if explicit else ckpt.newest_config()
        except Exception as e:  # noqa: BLE001
            raise UserError(
                f"--workdir {workdir}: step {step}: config unreadable ({first_line(e)})"
            ) from None
        if saved is None:
            raise UserError(f"{ckpt.directory}: no checkpoint has a readable config")
        config = ml_collections.ConfigDict(saved if explicit else saved[1])
        task = build_task(config)
        size = int(config.image_size)
        sample_batch = {
            "image": np.zeros((int(config.batch_size), size, size, 3), np.float32),
            "label": np.zeros((int(config.batch_size),), np.int32),
            # shapes only; tasks conditioned on masks (mask-guided DDPM) need the key to init
            "mask": np.zeros((int(config.batch_size), size, size, 1), np.float32),
        }
        rep = replicated(make_mesh())
        abstract = abstract_state(task, jax.random.PRNGKey(0), sample_batch, rep, size)
        if explicit:
            try:
                state, _ = ckpt.restore(abstract, None, step)
            except Exception as e:  # noqa: BLE001 - a damaged checkpoint is the user's to fix
                raise UserError(
                    f"--workdir {workdir}: checkpoint step {step} is damaged ({first_line(e)})"
                ) from None
        else:
            state, _, step = ckpt.restore_newest_intact(abstract, None, log)
    finally:
        ckpt.close()
    return task, state, config, step
