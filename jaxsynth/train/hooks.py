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


def evaluator_hooks(task, settings, data) -> list[Hook]:
    """The built-in evaluators the config asks for: grids (`train.sample_every`, with
    `train.sample_grid` images), SSIM to real (`train.ssim_every`, `train.ssim_samples`; needs
    `data.real_images`), the FID curve (`train.fid_every`, `train.fid_samples`; needs
    `data.heldout_images`). Tasks without a sampler get none. `settings`: `engine_settings`."""
    if not has_sampler(task):
        return []
    sampler = Sampler(task, len(data.class_names))
    key = jax.random.PRNGKey(SAMPLE_GRID_SEED)
    hooks: list[Hook] = [
        SampleGrid(sampler, int(settings.sample_every), int(settings.sample_grid), key)
    ]
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
