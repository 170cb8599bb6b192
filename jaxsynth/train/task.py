"""The plug-in interface between a model and the one training engine (`jaxsynth.train.loop`).

A model plugs into the engine as a **Task**: an object that knows how to build its `TrainState`
and how to take one optimiser step. The engine owns everything else (jit, device mesh and
sharding, donation, per-step RNG, K-steps-per-dispatch, NaN/Inf guard, checkpoints with the
data-iterator state, metrics, progress, sample grids). There is no second training loop.

How to plug a model in (e.g. a DDPM)::

    # jaxsynth/tasks/ddpm.py
    from jaxsynth.train.state import ModelState, TrainState

    class DdpmTask:
        name = "ddpm"
        ema_name = "model"              # which ModelState `sample` uses (EMA params)

        def __init__(self, config): self.config = config; self.net = UNet(...)

        def init(self, rng, sample_batch):             # NOT jitted by you: the engine jits it
            params = self.net.init(rng, sample_batch["image"], ...)["params"]
            tx = optax.adam(self.config.optim.lr)
            return TrainState.create(rng, {"model": ModelState.create(params, tx, ema_decay=.9999)})

        def train_step(self, state, batch, rng):        # PURE: no Python side effects
            def loss_fn(params): ...
            loss, grads = jax.value_and_grad(loss_fn)(state["model"].params)
            state = state.with_model("model", state["model"].apply_gradients(grads))
            return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

        def sample(self, state, rng, n, labels=None):  # optional; images float32 [-1, 1] NHWC
            ...

    def make_task(config): return DdpmTask(config)

and in the config: ``config.task = "jaxsynth.tasks.ddpm:make_task"`` (a `module:callable` path;
short names in `BUILTIN_TASKS` also work). `jaxsynth train --config configs/ddpm.py` then works.

Contract, in detail:

* ``init(rng, sample_batch) -> TrainState``. `sample_batch` is one global batch as the loader
  yields it (``{"image": float32 [-1,1] (B,H,W,3), "label": int32 (B,), "mask"?: (B,H,W,1)}``),
  only for shapes. Must be deterministic in `rng`. The engine calls it under `jax.jit` with
  replicated outputs, so it must be traceable. Put the base RNG in the state with
  `TrainState.create(rng, models)`; build optimisers from the config here (they are static).
* ``train_step(state, batch, rng) -> (state, metrics)``. Pure and traceable. `rng` is this step's
  key (`fold_in(state.rng, state.step)`, already derived by the engine: do not fold the step in
  again). Do NOT change `state.step`: the engine increments it after the call. `batch` is the
  global batch (sharded on the "data" mesh axis; write the code as if on one device: means over
  the batch are global, so BatchNorm and losses are identical on 1 or N devices). Several
  optimiser updates per step are fine (GAN: D then G; WGAN-GP: `lax.scan` over n_critic D
  updates, each on its own slice of the batch). `metrics` is a flat dict of float32 scalars:
  include every loss and, unless it costs a measurable share of the step (the small classifier:
  docs/speed.md), the global grad norm of every network; the engine's NaN/Inf guard stops
  the run if ANY metric is non-finite, so report the values that could diverge.
* ``eval_step(state, batch) -> {name: sum, ..., "count": rows}`` and ``eval_variables(state)``
  (optional, together): held-out evaluation for the `Validation` hook (`train.eval_every`;
  batches carry a `weight` of 0 on padding rows) and the weights it keeps as the best.
* ``step_phase(step: int) -> Hashable | None`` (optional): the static part of step `step`'s
  program, e.g. which lazy regularisers fire (StyleGAN2: R1 every 16 steps, path length every
  4). When every dispatch is one step (CPU's default), the engine compiles one single-step
  program per phase and calls ``train_step(state, batch, rng, phase=phase)``, so an off step
  does not pay for the regulariser (XLA:CPU runs convolutions inside `lax.cond` ~25x slower,
  and a select computes both branches). Inside a K-step scan, and in the member axis, the
  engine calls ``train_step(state, batch, rng)`` and the task decides from `state.step`; both
  must compute the same values. Every phase returns the same metric names.
* ``cache_key`` (optional attribute, hashable): tasks with equal keys behave identically, so
  the engine reuses their compiled init and steps across runs (`steps.cached_programs`).
* ``sample(state, rng, n, labels=None) -> float32 (n,H,W,3) in [-1, 1]`` (optional). Use the EMA
  params (`state[ema_name].ema_variables`). `labels` is int32 (n,) or None (unconditional). Called
  under jit by the engine for sample grids / the SSIM curve, and by `jaxsynth sample`.
* ``sample_with_options(state, rng, n, labels=None, masks=None, options=None)`` and
  ``sampler_options(**cli_options) -> options`` (optional, together): a task whose sampler has
  settings (DDPM: sampler, steps, eta, guidance; masks for mask-guided models) exposes them so
  `jaxsynth sample` can pass the CLI's values without knowing the task.
* Attributes: ``name`` (str, used in logs and sidecars); ``ema_name`` (the ModelState `sample`
  draws from, default "generator"); ``conditional`` (bool: `sample` honours `labels`).

A Task object may hold modules, the config and constants; it must not hold arrays that change.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import jax
import ml_collections

from jaxsynth.errors import UserError
from jaxsynth.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# Short names accepted in `config.task`, mapped to `module:callable` factories taking the config.
BUILTIN_TASKS: dict[str, str] = {
    "dcgan": "jaxsynth.tasks.gan:make_task",
    "cgan": "jaxsynth.tasks.gan:make_task",
    "wgan_gp": "jaxsynth.tasks.gan:make_task",
    "gan": "jaxsynth.tasks.gan:make_task",
}


@runtime_checkable
class Task(Protocol):
    """See the module docstring for the full contract."""

    name: str

    def init(self, rng: jax.Array, sample_batch: Batch) -> TrainState: ...

    def train_step(
        self, state: TrainState, batch: Batch, rng: jax.Array
    ) -> tuple[TrainState, Metrics]: ...


def has_sampler(task: Any) -> bool:
    """Whether the task implements the optional `sample(state, rng, n, labels)`."""
    return callable(getattr(task, "sample", None))


def build_task(config: ml_collections.ConfigDict) -> Task:
    """Instantiate the task named by `config.task` (a short name or `module:callable`)."""
    spec = config.get("task")
    if not spec:
        raise UserError("config has no 'task' key (e.g. task = 'dcgan' or 'pkg.module:make_task')")
    path = BUILTIN_TASKS.get(spec, spec)
    module_name, _, attr = path.partition(":")
    if not attr:
        raise UserError(f"config.task='{spec}': expected a known name or 'module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"config.task='{spec}': cannot import {module_name} ({e})") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise UserError(f"config.task='{spec}': {module_name} has no '{attr}'")
    task = factory(config)
    if not isinstance(task, Task):
        raise UserError(f"config.task='{spec}': {path} did not return a Task (init/train_step)")
    return task
