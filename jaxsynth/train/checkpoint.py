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

    def close(self) -> None:
        self.manager.close()


def has_checkpoint(workdir: str | Path) -> bool:
    d = Path(workdir) / "checkpoints"
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def load_trained(workdir: str | Path, step: int | None = None):
    """`(task, state, config, step)` from a run directory, for sampling / evaluation.

    Rebuilds the task from the config saved in the checkpoint, restores the TrainState
    (replicated on this host's mesh), and ignores the data iterator.
    """
    import ml_collections
    import numpy as np

    from jaxsynth.errors import UserError
    from jaxsynth.train.mesh import make_mesh, replicated
    from jaxsynth.train.task import build_task

    if not has_checkpoint(workdir):
        raise UserError(f"--workdir {workdir}: no checkpoints (train there first)")
    ckpt = RunCheckpointer(workdir)
    try:
        step = ckpt.latest_step() if step is None else step
        if step not in ckpt.all_steps():
            raise UserError(f"--workdir {workdir}: no checkpoint at step {step}")
        config = ml_collections.ConfigDict(ckpt.restore_config(step))
        task = build_task(config)
        size = int(config.image_size)
        sample_batch = {
            "image": np.zeros((int(config.batch_size), size, size, 3), np.float32),
            "label": np.zeros((int(config.batch_size),), np.int32),
            # shapes only; tasks conditioned on masks (mask-guided DDPM) need the key to init
            "mask": np.zeros((int(config.batch_size), size, size, 1), np.float32),
        }
        rep = replicated(make_mesh())
        abstract = jax.eval_shape(task.init, jax.random.PRNGKey(0), sample_batch)
        abstract = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), abstract
        )
        state, _ = ckpt.restore(abstract, None, step)
    finally:
        ckpt.close()
    return task, state, config, step
