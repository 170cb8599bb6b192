"""Evaluators as hooks: what the training loop runs between steps, chosen by config or injected.

WHY: the loop should only train, check and save. Everything that *looks at* a model while it
trains — sample grids, SSIM to real (Rane 2026), the FID curve — and anything a test wants to
slip in between steps (a pause so a kill lands mid-run) is a `Hook` with one contract:

* `due(prev, step, final)`: the loop has just advanced from step `prev` to `step` (one dispatch,
  possibly K steps); `final` is the last dispatch of the run;
* `reads_state`: True when the hook uses the model state. The loop then checks every pending
  dispatch's metrics for NaN/Inf *before* calling it, so no hook ever sees an unchecked state
  (the engine's NaN-guard promise); a hook that does not read the state (a pause) keeps the
  loop one dispatch ahead of the host;
* `__call__(state, step, ctx)`: do the work; log through `ctx` (TensorBoard, `metrics.jsonl`,
  PNGs), which writes files only on process 0.

`evaluator_hooks` builds the built-in evaluators from `train.sample_every`, `train.ssim_every`
and `train.fid_every` (0 switches one off); `train(..., hooks=[...])` adds more.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxsynth.train import visuals
from jaxsynth.train.task import has_sampler

SAMPLE_GRID_SEED = 20_240_917  # fixed key for the periodic grids: the same z every time


def crossed(prev: int, now: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (prev, now] (0 = never)."""
    return every > 0 and now // every > prev // every


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


@dataclasses.dataclass
class HookContext:
    """Where a hook reports: the run's writers, its `metrics.jsonl`, and whether this process
    writes files (only process 0 does in a multi-host run)."""

    writer: Any
    metrics_path: Path
    is_main: bool

    @property
    def workdir(self) -> Path:
        return self.metrics_path.parent

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.writer.write_scalars(step, values)
        if self.is_main:
            append_jsonl(self.metrics_path, {"step": step, **values})

    def image(self, step: int, name: str, image: np.ndarray, png: Path | None = None) -> None:
        if self.is_main and png is not None:
            visuals.save_png(image, png)
        self.writer.write_images(step, {name: image[None]})


class Hook(Protocol):
    reads_state: bool

    def due(self, prev: int, step: int, final: bool) -> bool: ...

    def __call__(self, state: Any, step: int, ctx: HookContext) -> None: ...


class Sampler:
    """`draw(state, n, key, labels=None)` -> uint8 images, one jitted sampler per `n`, shared by
    the sampling evaluators. Conditional tasks get labels cycling over the classes by default."""

    def __init__(self, task, num_classes: int) -> None:
        self.task = task
        self.conditional = bool(getattr(task, "conditional", False))
        self.num_classes = max(1, num_classes)
        self._jitted: dict[int, Any] = {}

    def __call__(self, state, n: int, rng, labels=None) -> np.ndarray:
        if self.conditional and labels is None:
            labels = jnp.arange(n, dtype=jnp.int32) % self.num_classes
        if n not in self._jitted:
            self._jitted[n] = jax.jit(lambda st, r, lb: self.task.sample(st, r, n, lb))
        fake = self._jitted[n](state, rng, labels if self.conditional else None)
        return visuals.to_uint8(np.asarray(jax.device_get(fake)))


@dataclasses.dataclass
class _Evaluator:
    """What the sampling evaluators share: `n` samples from `key` every `every` steps (0 =
    never) and at the end of the run."""

    sampler: Sampler
    every: int
    n: int
    key: Any
    reads_state: ClassVar[bool] = True

    def due(self, prev: int, step: int, final: bool) -> bool:
        return crossed(prev, step, self.every) or final


@dataclasses.dataclass
class SampleGrid(_Evaluator):
    """A grid of `n` samples from a fixed key every `every` steps and at the end
    (`<workdir>/samples/step_*.png` and TensorBoard)."""

    def __call__(self, state, step: int, ctx: HookContext) -> None:
        grid = visuals.make_grid(self.sampler(state, self.n, self.key))
        ctx.image(step, "samples", grid, ctx.workdir / "samples" / f"step_{step:07d}.png")


@dataclasses.dataclass(kw_only=True)
class SsimToReal(_Evaluator):
    """Mean SSIM of `n` samples to the real training images (Rane 2026's SSIM), logged as
    `ssim_to_real` every `every` steps and at the end."""

    real: np.ndarray

    def __call__(self, state, step: int, ctx: HookContext) -> None:
        from jaxsynth.eval.image_metrics import ssim_to_set

        fake = self.sampler(state, self.n, self.key)
        ctx.scalars(step, {"ssim_to_real": ssim_to_set(fake, self.real[:128])["mean"]})


@dataclasses.dataclass(kw_only=True)
class FidCurve(_Evaluator):
    """FID (or domain FID) of `n` samples against the held-out real images every `every` steps
    and at the end. `build_monitor()` makes the extractor on first use (the domain extractor
    trains a small CNN: seconds) and may return None (nothing to measure with: the hook stays
    silent). Conditional models are sampled with the held-out class mix, so the two
    distributions are comparable."""

    build_monitor: Any
    heldout_labels: np.ndarray | None = None
    _monitor: Any = dataclasses.field(default=None, init=False)
    _built: bool = dataclasses.field(default=False, init=False)

    def __call__(self, state, step: int, ctx: HookContext) -> None:
        if not self._built:
            self._monitor, self._built = self.build_monitor(), True
        if self._monitor is None:
            return
        labels = None
        if self.sampler.conditional and self.heldout_labels is not None:
            reps = -(-self.n // len(self.heldout_labels))
            labels = jnp.asarray(np.tile(self.heldout_labels, reps)[: self.n], jnp.int32)
        fake = self.sampler(state, self.n, self.key, labels)
        ctx.scalars(step, {self._monitor.key: self._monitor(fake)})


@dataclasses.dataclass
class Pause:
    """Sleep `seconds` on the host after every dispatch. For tests that kill a run at a chosen
    moment (kill -9 + resume); it does not read the state, so it costs no synchronisation."""

    seconds: float
    reads_state: ClassVar[bool] = False

    def due(self, prev: int, step: int, final: bool) -> bool:
        return True

    def __call__(self, state, step: int, ctx: HookContext) -> None:
        time.sleep(self.seconds)


def eval_batches(arrays: dict, batch_size: int) -> list[dict]:
    """Held-out arrays as fixed-size batches (one compiled eval step): image float32 [-1, 1],
    label int32, weight 1 on real rows and 0 on the last batch's padding."""
    from jaxsynth.train.device_data import fixed_batches

    images, labels = np.asarray(arrays["image"]), np.asarray(arrays["label"], np.int32)
    return [
        {
            "image": jnp.asarray(images[idx].astype(np.float32) / 127.5 - 1.0),
            "label": jnp.asarray(labels[idx]),
            "weight": jnp.asarray(valid.astype(np.float32)),
        }
        for idx, valid in fixed_batches(len(images), batch_size)
    ]


@dataclasses.dataclass(kw_only=True)
class Validation:
    """Held-out evaluation every `every` steps and at the end, keeping the best weights.

    WHY a hook and not a loop of its own: early stopping on a validation split (Rane 2026's
    classifier keeps the epoch with the lowest validation loss, as Keras' `restore_best_weights`)
    is the one thing the study's classifiers needed beyond the engine; as a hook every model
    trained by the engine gets it, with the engine's checkpoints, resume and logging.

    The task's `eval_step(state, batch) -> {name: sum over the batch's weighted rows, ...,
    "count": rows}` runs over `arrays` in fixed-size padded batches; `val_<name>` = sum / count
    is logged. With `keep` (a name of `eval_step`'s sums), the weights (`task.eval_variables`)
    with the lowest `val_<keep>` are kept on the host (`best`, `best_step`); with `persist` they
    are also saved in `<workdir>/best` by an Orbax manager that keeps only the best checkpoint
    (`best_fn`), and a resumed run restores them, so a stop never loses the best epoch.
    """

    task: Any
    arrays: dict
    every: int
    keep: str = "loss"
    persist: bool = False
    batch_size: int = 256
    reads_state: ClassVar[bool] = True
    history: list = dataclasses.field(default_factory=list, init=False)
    best: Any = dataclasses.field(default=None, init=False)
    best_step: int = dataclasses.field(default=-1, init=False)
    best_value: float = dataclasses.field(default=float("inf"), init=False)
    _batches: Any = dataclasses.field(default=None, init=False)
    _manager: Any = dataclasses.field(default=None, init=False)
    _eval: Any = dataclasses.field(default=None, init=False)

    def due(self, prev: int, step: int, final: bool) -> bool:
        return crossed(prev, step, self.every) or final

    def _fn(self):
        """The jitted eval step, made once per hook (and shared across runs of tasks with a
        `cache_key`), so a task without one does not recompile at every evaluation."""
        if self._eval is None:
            from jaxsynth.train.steps import cached_programs

            self._eval = cached_programs(self.task, ("eval",), lambda: jax.jit(self.task.eval_step))
        return self._eval

    def _open(self, workdir: Path, state) -> None:
        """The best-checkpoint manager; a resumed run takes its best over."""
        import orbax.checkpoint as ocp

        key = f"val_{self.keep}"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1,
            best_fn=lambda metrics: metrics[key],
            best_mode="min",
            create=True,
            enable_async_checkpointing=False,
        )
        self._manager = ocp.CheckpointManager((workdir / "best").resolve(), options=options)
        step = self._manager.best_step()
        if step is not None and self.best is None:
            template = jax.tree.map(np.asarray, jax.device_get(self.task.eval_variables(state)))
            self.best = self._manager.restore(step, args=ocp.args.StandardRestore(template))
            self.best_step = int(step)
            record = json.loads((workdir / "best" / "best.json").read_text())
            self.best_value = float(record[key])

    def __call__(self, state, step: int, ctx: HookContext) -> None:
        if self._batches is None:
            self._batches = eval_batches(self.arrays, self.batch_size)
        if self.persist and self._manager is None:
            self._open(ctx.workdir, state)
        fn = self._fn()
        sums = [fn(state, batch) for batch in self._batches]
        totals = {k: float(np.sum([np.asarray(o[k], np.float64) for o in sums])) for k in sums[0]}
        count = max(totals.pop("count"), 1.0)
        values = {f"val_{k}": v / count for k, v in totals.items()}
        self.history.append({"step": step, **values})
        ctx.scalars(step, values)
        value = values.get(f"val_{self.keep}") if self.keep else None
        if value is None or not value < self.best_value:
            return
        self.best_value, self.best_step = value, step
        self.best = jax.tree.map(np.asarray, jax.device_get(self.task.eval_variables(state)))
        if self.persist:
            import orbax.checkpoint as ocp

            self._manager.save(step, args=ocp.args.StandardSave(self.best), metrics=values)
            self._manager.wait_until_finished()
            if ctx.is_main:
                tmp = ctx.workdir / "best" / "best.json.tmp"
                tmp.write_text(json.dumps({"step": step, **values}))
                tmp.replace(ctx.workdir / "best" / "best.json")


def evaluator_hooks(task, settings, data) -> list[Hook]:
    """The built-in evaluators the config asks for: grids (`train.sample_every`, with
    `train.sample_grid` images), SSIM to real (`train.ssim_every`, `train.ssim_samples`; needs
    `data.real_images`), the FID curve (`train.fid_every`, `train.fid_samples`; needs
    `data.heldout_images`), and validation with keep-best (`train.eval_every`,
    `train.keep_best`; needs `task.eval_step` and `data.val_arrays`). `settings`:
    `engine_settings`."""
    hooks: list[Hook] = []
    if (
        settings.eval_every
        and data.val_arrays is not None
        and callable(getattr(task, "eval_step", None))
    ):
        hooks.append(
            Validation(
                task=task,
                arrays=data.val_arrays,
                every=int(settings.eval_every),
                keep=str(settings.keep_best),
                persist=bool(settings.keep_best),
            )
        )
    if not has_sampler(task):
        return hooks
    sampler = Sampler(task, len(data.class_names))
    key = jax.random.PRNGKey(SAMPLE_GRID_SEED)
    hooks.append(SampleGrid(sampler, int(settings.sample_every), int(settings.sample_grid), key))
    if data.real_images is not None:
        hooks.append(
            SsimToReal(
                sampler,
                int(settings.ssim_every),
                int(settings.ssim_samples),
                jax.random.fold_in(key, 1),
                real=data.real_images,
            )
        )
    if settings.fid_every and data.heldout_images is not None:

        def build_monitor():
            from jaxsynth.eval.monitor import build_fid_monitor

            return build_fid_monitor(settings, data.heldout_images, data.domain_features)

        hooks.append(
            FidCurve(
                sampler,
                int(settings.fid_every),
                int(settings.fid_samples),
                jax.random.fold_in(key, 2),
                build_monitor=build_monitor,
                heldout_labels=data.heldout_labels,
            )
        )
    return hooks
