"""The engine's compiled steps: one step, K steps per dispatch, and the device-data variants.

Split from `loop.py` (which drives them). Every variant is `(state, batch-or-arrays) -> (state,
metrics)` jitted over the 1-D "data" mesh with the state replicated and donated, and each
step's key is `fold_in(state.rng, state.step)`, so a step's randomness depends only on its
number (the basis of exact resume).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsynth.train.device_data import draw_batch
from jaxsynth.train.mesh import batch_sharding, replicated
from jaxsynth.train.state import TrainState
from jaxsynth.train.task import Task


class AotSteps:
    """The compiled steps, compiled ahead of time (`lower(...).compile()`) with the time logged.

    Compiling before the first batch arrives keeps the first step's time honest in the progress
    line and makes the compile cost visible (it dominates short CPU runs). One executable per
    dispatch size k (K, and 1 for a tail of fewer than K steps) and, for single steps of a task
    with `step_phase`, per phase; each built on first use.
    """

    def __init__(
        self, single_for, step_multi, state, sample, global_batch_size, mesh, out, compiled=None
    ):
        """`single_for(phase)`: the jitted single step of that phase (None: the task's dynamic
        step). `sample`: a zero global batch (Grain path: K of them are stacked per dispatch),
        or with `global_batch_size=None` the device-resident arrays (the same every dispatch;
        `step_multi(k)` then gives the jitted K-step function). `compiled`: a dict shared
        with earlier runs of the same program (`cached_programs`), filled on first use."""
        self._single_for = single_for
        self._multi = step_multi
        self._state_spec = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
        )
        self._sample = sample
        self._device_data = global_batch_size is None
        self._mesh = mesh
        self._out = out
        self._compiled: dict[int, Any] = {} if compiled is None else compiled

    def __call__(self, k: int, phase: Hashable = None):
        """The executable for a dispatch of k steps (`phase`: only with k = 1)."""
        key = k if phase is None else (k, phase)
        if key in self._compiled:
            return self._compiled[key]
        if self._device_data:
            fn = self._single_for(phase) if k == 1 else self._multi(k)
            spec = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self._sample
            )
        else:
            lead = 0 if k == 1 else 1
            sharding = batch_sharding(self._mesh, lead)
            spec = {
                name: jax.ShapeDtypeStruct(
                    ((k,) if lead else ()) + v.shape, v.dtype, sharding=sharding
                )
                for name, v in self._sample.items()
            }
            fn = self._single_for(phase) if k == 1 else self._multi
        t0 = time.perf_counter()
        self._compiled[key] = fn.lower(self._state_spec, spec).compile()
        seconds = time.perf_counter() - t0
        what = f"{k} step{'s' if k > 1 else ''} per dispatch"
        if phase is not None:
            what += f", phase {phase}"
        print(f"compiled the train step ({what}) in {seconds:.1f} s", file=self._out, flush=True)
        return self._compiled[key]


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
MAX_CACHED_PROGRAMS = 8


def cached_programs(task: Task, parts: tuple, build: Callable[[], Any]) -> Any:
    """`build()`'s result (the jitted init and steps, their compiled executables), shared by
    every run whose task has the same `cache_key` and whose `parts` (mesh, batch, augmentation,
    array shapes) are equal. WHY: a study trains dozens of small classifiers of one
    architecture; compiling each one's init and step again costs seconds per model, more than
    some of them take to train. Tasks without a `cache_key` attribute compile per run."""
    key = getattr(task, "cache_key", None)
    if key is None:
        return build()
    full = (type(task).__module__, type(task).__qualname__, key, parts)
    if full in _PROGRAMS:
        _PROGRAMS.move_to_end(full)
        return _PROGRAMS[full]
    _PROGRAMS[full] = value = build()
    while len(_PROGRAMS) > MAX_CACHED_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return value


def _metrics_out(metrics: dict, names: list | None):
    """float32 metrics; with `names` (a list) packed into ONE vector in sorted-name order, the
    names appended to the list when the step is traced. WHY: the loop reads every dispatch's
    metrics (the NaN guard); one array is one host transfer instead of one per metric, which on
    a small model's millisecond steps is most of the engine's overhead."""
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    if names is None:
        return metrics
    keys = sorted(metrics)
    if not names:
        names.extend(keys)
    elif keys != names:  # every phase of a step packs the same vector
        raise ValueError(f"the train step's metrics changed: {keys} vs {names}")
    return jnp.stack([metrics[k].reshape(()) for k in keys])


def _task_step(task: Task, phase: Hashable):
    """`task.train_step`, with `phase=` passed when the engine dispatches a static phase
    (`Task.step_phase`); tasks without phases never see the keyword."""
    if phase is None:
        return task.train_step
    return functools.partial(task.train_step, phase=phase)


def make_step_fns(
    task: Task, mesh, names: list | None = None, phase: Hashable = None
) -> tuple[Any, Any]:
    """The engine's compiled steps: `(state, batch) -> (state, metrics)` for one step and
    `(state, batches[K]) -> (state, metrics[K])` for K steps via `lax.scan`. Batch sharded on
    "data", state replicated and donated, step key `fold_in(state.rng, state.step)`. With
    `names` (an empty list) the metrics come back as one packed vector (`_metrics_out`).
    `phase`: the single step traced for that static phase (`Task.step_phase`)."""
    rep = replicated(mesh)
    train_step = _task_step(task, phase)

    def one_step(st: TrainState, batch: dict):
        rng = jax.random.fold_in(st.rng, st.step)
        new, metrics = train_step(st, batch, rng)
        return new.replace(step=st.step + 1), _metrics_out(metrics, names)

    step_single = jax.jit(
        one_step,
        in_shardings=(rep, batch_sharding(mesh)),
        out_shardings=(rep, rep),
        donate_argnums=0,
    )
    # On CPU the K steps are unrolled: XLA:CPU runs convolutions inside a while-loop body an
    # order of magnitude slower than the same convolutions outside one (measured: DCGAN-64 at
    # K=4 scanned < 0.5 steps/s vs 4.5 steps/s at K=1; the WGAN-GP critic loop had the same
    # problem). GPU/TPU keep the rolled loop (compile time independent of K).
    unroll = jax.default_backend() == "cpu"
    step_multi = jax.jit(
        lambda st, batches: jax.lax.scan(one_step, st, batches, unroll=unroll),
        in_shardings=(rep, batch_sharding(mesh, 1)),
        out_shardings=(rep, rep),
        donate_argnums=0,
    )
    return step_single, step_multi


def device_draw(global_batch_size: int, augment: str, mesh):
    """`(device arrays, step) -> batch` drawn inside the compiled step, sharded on "data". The
    record order's key and the record count are inputs (`put_on_device`), not constants, so one
    compiled step serves every seed and every training-set size in a bucket."""

    def draw(arrays, step):
        batch = draw_batch(arrays, arrays["data_key"], step, global_batch_size, augment)
        return jax.lax.with_sharding_constraint(batch, batch_sharding(mesh))

    return draw


def device_data_step(task: Task, draw, names: list | None = None, phase: Hashable = None):
    """The pure (unjitted) device-data step `(state, arrays) -> (state, metrics)`: the batch
    `draw(arrays, state.step)`, the key `fold_in(state.rng, state.step)`. One home for what a
    step is, jitted here (`make_device_data_step_fns`) and vmapped over a member axis
    (`jaxsynth.train.members`)."""
    train_step = _task_step(task, phase)

    def one_step(st: TrainState, arrays: dict):
        batch = draw(arrays, st.step)
        rng = jax.random.fold_in(st.rng, st.step)
        new, metrics = train_step(st, batch, rng)
        return new.replace(step=st.step + 1), _metrics_out(metrics, names)

    return one_step


def make_device_data_step_fns(
    task: Task, mesh, draw, names: list | None = None, phase: Hashable = None
):
    """Like `make_step_fns`, but the step takes the device-resident arrays and draws its own
    batch for `state.step`: `(state, arrays) -> (state, metrics)`, and `k -> jitted
    (state, arrays) -> (state, metrics[k])` (a `lax.scan` of length k)."""
    rep = replicated(mesh)
    one_step = device_data_step(task, draw, names, phase)

    def jitted(fn):
        return jax.jit(fn, in_shardings=(rep, rep), out_shardings=(rep, rep), donate_argnums=0)

    unroll = jax.default_backend() == "cpu"  # see make_step_fns

    def multi(k: int):
        return jitted(
            lambda st, arrays: jax.lax.scan(
                lambda s, _: one_step(s, arrays), st, None, length=k, unroll=unroll
            )
        )

    return jitted(one_step), multi


@dataclasses.dataclass
class Programs:
    """A run's jitted init and steps, and the executables compiled from them (by K, phase)."""

    init: Any
    step_single: Any
    step_multi: Any
    metric_names: list[str]  # filled when the step is traced (one packed vector)
    compiled: dict = dataclasses.field(default_factory=dict)
    make_single: Callable[[Hashable], Any] | None = None  # phase -> jitted single step
    singles: dict = dataclasses.field(default_factory=dict)

    def single_for(self, phase: Hashable = None):
        """The jitted single step of a static phase (`Task.step_phase`); None: the dynamic one."""
        if phase is None:
            return self.step_single
        if phase not in self.singles:
            self.singles[phase] = self.make_single(phase)
        return self.singles[phase]


def _build_programs(task: Task, mesh, batch_size: int, augment: str, on_device: bool) -> Programs:
    rep = replicated(mesh)
    names: list[str] = []
    if on_device:
        draw = device_draw(batch_size, augment, mesh)

        def make(phase):
            return make_device_data_step_fns(task, mesh, draw, names, phase)
    else:

        def make(phase):
            return make_step_fns(task, mesh, names, phase)

    single, multi = make(None)
    return Programs(
        jax.jit(task.init, out_shardings=rep),
        single,
        multi,
        names,
        make_single=lambda phase: make(phase)[0],
    )


def array_shapes(tree) -> tuple:
    return tuple(
        (k, tuple(np.shape(v)), str(getattr(v, "dtype", type(v)))) for k, v in sorted(tree.items())
    )


def run_programs(task: Task, mesh, batch_size: int, augment: str, sample: dict) -> Programs:
    """The run's programs, shared with earlier runs of an equal task on equal shapes
    (`cached_programs`). `sample`: the device arrays (device-data path) or a zero batch."""
    on_device = "data_key" in sample
    parts = (
        mesh.devices.shape,
        tuple(d.id for d in mesh.devices.flat),
        on_device,
        batch_size,
        augment,
        array_shapes(sample),
    )
    return cached_programs(
        task, parts, lambda: _build_programs(task, mesh, batch_size, augment, on_device)
    )
