"""The one training loop. Every model (GANs, DDPM, classifiers) runs through `train()`.

What the engine does around a `Task` (see `jaxsynth.train.task` for the contract):

* compiles `train_step` once with `jax.jit` over a 1-D "data" mesh: batch sharded on "data",
  state replicated, the state buffer donated; `config.train.steps_per_dispatch = K > 1` runs K
  steps per call with `lax.scan` over K stacked batches (fewer dispatches for small models);
  0 picks K automatically (`jaxsynth.train.dispatch`);
* never waits on the device between steps: metrics are read one dispatch late, and training data
  that fits `train.device_data_max_bytes` lives on the device with each step's batch drawn
  inside the compiled step (`jaxsynth.train.device_data`, switch `train.device_data`);
* derives each step's key as `fold_in(state.rng, state.step)`, so randomness depends only on the
  step number: this, the saved Grain iterator position and the saved optimiser state make a
  resumed run bitwise identical to an uninterrupted one on CPU;
* checks every metric of every step for NaN/Inf and stops with one line naming the step and the
  loss; all pending metrics are checked before any checkpoint, sample or stop, so nothing
  unchecked is ever saved (the last good checkpoint stays intact);
* saves checkpoints every `checkpoint_every` steps, on SIGTERM/SIGINT, and at the end; resumes
  from `<workdir>/checkpoints` when it holds one;
* logs averaged metrics (clu) to TensorBoard event files (`<workdir>/tb`), `metrics.jsonl` and the
  console (step, losses, steps/s, ETA), and the loss / SSIM / FID curves as PNGs;
* calls hooks between dispatches (`jaxsynth.train.hooks`): the evaluators the config asks for
  (sample grids, SSIM to real, the FID curve, validation with keep-best) and any a caller
  passes in;
* shares compiled programs between runs of equal tasks (`steps.run_programs`), and with
  `scratch=True` writes nothing but `metrics.jsonl` (the study's in-memory classifiers).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxsynth.config import config_to_dict
from jaxsynth.data.pipeline import make_loader, to_global
from jaxsynth.errors import UserError
from jaxsynth.train import visuals
from jaxsynth.train.checkpoint import NoCheckpoints, RunCheckpointer, abstract_state, resume
from jaxsynth.train.defaults import engine_settings
from jaxsynth.train.device_data import (
    check_augment,
    data_bytes,
    put_on_device,
    seed_data_key,
    use_device_data,
)
from jaxsynth.train.dispatch import DeviceDataFeed, PendingMetrics, auto_steps_per_dispatch
from jaxsynth.train.hooks import Hook, HookContext, append_jsonl, crossed, evaluator_hooks
from jaxsynth.train.mesh import (
    global_batch,
    make_mesh,
    maybe_initialize_distributed,
    replicated,
)
from jaxsynth.train.metrics import ConsoleWriter, MetricAverager, MultiWriter, TensorBoardWriter
from jaxsynth.train.prefetch import DevicePrefetcher, dispatch_plan
from jaxsynth.train.progress import Progress
from jaxsynth.train.state import TrainState
from jaxsynth.train.steps import (
    AotSteps,
    run_programs,
)
from jaxsynth.train.task import Task, build_task
from jaxsynth.validate import check_train_config
from jaxsynth.version import write_environment


class TrainingDiverged(UserError):
    """A non-finite loss or gradient norm; the run stopped without saving the bad state."""


@dataclasses.dataclass
class TrainData:
    """What a run trains on.

    arrays: the dict `make_loader` takes (uint8 images (N,H,W,3), int labels (N,), ...), ONLY
      training-split images of the classes this model may see.
    real_images: uint8 real images for the SSIM-to-real curve (None: no curve).
    class_names: label i is class_names[i] (for conditional sampling and sidecars).
    heldout_images / heldout_labels: real images the model never trains on (val + test of its
      classes), the reference of the FID curve (`train.fid_every`); conditional models are
      sampled with the held-out label mix.
    domain_features: a zero-argument callable that builds the feature extractor of the FID
      curve when no Inception weights are given (`jaxsynth.tasks.domain.domain_features`);
      called at the first FID evaluation only.
    val_arrays: real validation images and labels (`{"image", "label"}`) for the validation
      hook (`train.eval_every`): early stopping and keep-best.
    """

    arrays: dict[str, np.ndarray]
    real_images: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    heldout_images: np.ndarray | None = None
    heldout_labels: np.ndarray | None = None
    domain_features: Any = None
    val_arrays: dict[str, np.ndarray] | None = None


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    step: int
    interrupted: bool
    resumed_from: int | None
    workdir: Path


def sample_batch(
    arrays: dict[str, np.ndarray], global_batch_size: int, size: int | None = None
) -> dict[str, np.ndarray]:
    """A zero batch with the loader's global shapes/dtypes (what `Task.init` gets)."""
    h, w = arrays["image"].shape[1:3] if size is None else (size, size)
    out = {
        "image": np.zeros((global_batch_size, h, w, 3), np.float32),
        "label": np.zeros((global_batch_size,), np.int32),
    }
    if "mask" in arrays:
        out["mask"] = np.zeros((global_batch_size, h, w, 1), np.float32)
    if "weight" in arrays:
        out["weight"] = np.zeros((global_batch_size,), np.float32)
    return out


def _first_nonfinite(metrics: dict[str, np.ndarray], k: int) -> tuple[int, str, float] | None:
    """(index within the dispatch, metric name, value) of the first non-finite metric."""
    for i in range(k):
        for name in sorted(metrics, key=lambda n: (0 if "loss" in n else 1, n)):
            v = float(np.asarray(metrics[name]).reshape(-1)[i] if k > 1 else metrics[name])
            if not np.isfinite(v):
                return i, name, v
    return None


class _StopFlag:
    """SIGTERM/SIGINT set a flag; the loop checkpoints and exits at the next step boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_curves(workdir: Path, records: list[dict]) -> None:
    """loss_curves.png and ssim_curve.png from metrics.jsonl (latest value per step wins)."""
    by_step: dict[tuple[str, int], float] = {}
    for r in records:
        for k, v in r.items():
            if k != "step":
                by_step[(k, int(r["step"]))] = float(v)
    losses: dict[str, list] = {}
    ssim: dict[str, list] = {}
    fid: dict[str, list] = {}
    for (k, s), v in sorted(by_step.items(), key=lambda kv: kv[0][1]):
        if "loss" in k:
            losses.setdefault(k, []).append((s, v))
        elif k.startswith("ssim"):
            ssim.setdefault(k, []).append((s, v))
        elif k.startswith("fid"):
            fid.setdefault(k, []).append((s, v))
    if losses:
        visuals.plot_curves(losses, workdir / "loss_curves.png", "training losses", "loss")
    if ssim:
        visuals.plot_curves(ssim, workdir / "ssim_curve.png", "SSIM of samples to real", "SSIM")
    if fid:
        visuals.plot_curves(
            fid, workdir / "fid_curve.png", "FID of samples vs held-out real", "FID"
        )


def train(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    data: TrainData,
    *,
    task: Task | None = None,
    stream=None,
    hooks: list[Hook] | tuple[Hook, ...] = (),
    scratch: bool = False,
) -> TrainResult:
    """Train `config.task` on `data` for `config.num_steps` steps in `workdir` (resuming).

    `hooks` run after the config's evaluators (`jaxsynth.train.hooks.evaluator_hooks`).
    `scratch`: the caller keeps only what `train` returns and what its hooks hold (a study's
    small classifiers); the workdir gets `metrics.jsonl` only: no checkpoints, TensorBoard
    events, curve PNGs or config/environment files, which would cost more than some of those
    runs take to train."""
    maybe_initialize_distributed()
    out = stream or sys.stdout
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = engine_settings(config)
    task = task if task is not None else build_task(config)
    mesh = make_mesh()
    rep = replicated(mesh)
    n_dev = mesh.devices.size
    check_train_config(config, n_dev)
    k_steps, k_why = auto_steps_per_dispatch(settings, config)
    is_main = jax.process_index() == 0
    cfg_dict = config_to_dict(config)
    augment = config.data.get("augment", "none")
    on_device = use_device_data(
        settings.device_data, data.arrays, int(settings.device_data_max_bytes)
    )
    print(
        f"engine: {k_steps} step{'s' if k_steps > 1 else ''} per dispatch ({k_why}); data "
        + (
            f"on device ({data_bytes(data.arrays) / 2**20:.1f} MiB, train.device_data="
            f"{settings.device_data})"
            if on_device
            else f"from Grain (train.device_data={settings.device_data})"
        ),
        file=out,
        flush=True,
    )
    if on_device:
        check_augment(augment, data.arrays)
        if config.batch_size > len(data.arrays["image"]):
            raise UserError(
                f"batch_size={config.batch_size} is larger than the "
                f"{len(data.arrays['image'])} training images"
            )
        data_iter = None
        device_arrays = put_on_device(data.arrays, rep, seed_data_key(config.seed))
    else:
        device_arrays = None
        loader = make_loader(
            data.arrays,
            global_batch_size=config.batch_size,
            seed=config.seed,
            augment=augment,
            worker_count=int(settings.data_workers),
        )
        data_iter = iter(loader)
    first_batch = sample_batch(data.arrays, config.batch_size)
    base_rng = jax.random.PRNGKey(config.seed)

    programs = run_programs(
        task, mesh, config.batch_size, augment, device_arrays if on_device else first_batch
    )
    ckpt = (
        NoCheckpoints(workdir) if scratch else RunCheckpointer(workdir, settings.keep_checkpoints)
    )
    abstract = abstract_state(task, base_rng, first_batch, rep, config.image_size)
    restored = resume(
        ckpt,
        abstract,
        data_iter,
        cfg_dict,
        lambda saved: abstract_state(
            build_task(ml_collections.ConfigDict(saved)),
            base_rng,
            sample_batch(data.arrays, config.batch_size, int(saved["image_size"])),
            rep,
            saved["image_size"],
        ),
        lambda msg: print(msg, file=out, flush=True),
    )
    resumed_from = None if restored is None else restored[2]
    if restored is not None:
        state, data_iter = restored[0], restored[1]
    else:
        state = programs.init(base_rng, first_batch)
        ckpt.save(state, data_iter, cfg_dict)  # step 0: there is always a last good checkpoint
    if is_main and not scratch:
        (workdir / "config.json").write_text(json.dumps(cfg_dict, indent=2, sort_keys=True))
        write_environment(workdir)

    compiled = AotSteps(
        programs.single_for,
        programs.step_multi,
        state,
        device_arrays if on_device else first_batch,
        None if on_device else config.batch_size,
        mesh,
        out,
        programs.compiled,
    )
    metric_names = programs.metric_names
    # Static step phases (Task doc) when every dispatch is one step; a K-step scan keeps the
    # task's dynamic step (and so does a tail of single steps after K-step dispatches).
    step_phase = getattr(task, "step_phase", None) if k_steps == 1 else None

    def produce(first: int, local: list[dict]):
        return _device_batch(first, local, mesh)

    def feeder(first: int):
        plan = dispatch_plan(first, config.num_steps, k_steps)
        if on_device:
            return DeviceDataFeed(device_arrays, plan)
        return DevicePrefetcher(data_iter, plan, produce, int(settings.prefetch))

    tensorboard = [] if scratch else [TensorBoardWriter(workdir / "tb")]
    writer = MultiWriter([*tensorboard, ConsoleWriter(out)] if is_main else [])
    metrics_path = workdir / "metrics.jsonl"
    averager = MetricAverager()
    step = int(jax.device_get(state.step))
    progress = Progress(config.num_steps, step, config.batch_size, stream=out)
    hooks = [*evaluator_hooks(task, settings, data), *hooks]
    ctx = HookContext(writer, metrics_path, is_main)
    interrupted = False

    pending = PendingMetrics(metric_names)
    window: list[dict] = []  # checked host metrics since the last log point

    def settle(keep: int) -> None:
        """Check (and log) every pending dispatch but the newest `keep`; stop on NaN/Inf."""
        for first, k, metrics in pending.pop(keep):
            bad = _first_nonfinite(metrics, k)
            if bad is not None:
                i, name, value = bad
                last = ckpt.latest_step()
                batches.stop_and_rewind()
                writer.flush()
                ckpt.close()
                raise TrainingDiverged(
                    f"training diverged at step {first + i}: {name}={value} is not finite; "
                    f"stopped, last good checkpoint is step {last} in {ckpt.directory}"
                )
            window.append(metrics)
            end = first + k
            if crossed(first, end, settings.log_every) or end == config.num_steps:
                # one averager update per log window: clu's update runs jnp ops (host time)
                averager.update(
                    {n: np.concatenate([np.reshape(m[n], -1) for m in window]) for n in metrics}
                )
                window.clear()
                scalars = averager.compute_and_reset()
                writer.write_scalars(end, scalars)
                progress.report(end, scalars)
                if is_main:
                    append_jsonl(metrics_path, {"step": end, **scalars})

    batches = feeder(step)
    with _StopFlag() as stop:
        while step < config.num_steps:
            batch, k = next(batches)
            phase = None if step_phase is None else step_phase(step)
            state, metrics = compiled(k, phase)(state, batch)
            pending.push(step, k, metrics)
            prev, step = step, step + k
            due = [h for h in hooks if h.due(prev, step, step == config.num_steps)]
            reads = any(h.reads_state for h in due)
            wants_ckpt = crossed(prev, step, config.checkpoint_every) and step < config.num_steps
            # one dispatch late, except before anything that uses (or saves) the state
            settle(0 if reads or wants_ckpt or stop.signum is not None else 1)
            for hook in due:
                hook(state, step, ctx)
            if wants_ckpt:
                batches.stop_and_rewind()  # the saved data position is the consumed one
                ckpt.save(state, data_iter, cfg_dict)
                batches = feeder(step)
            if stop.signum is not None:
                interrupted = True
                settle(0)
                batches.stop_and_rewind()
                ckpt.save(state, data_iter, cfg_dict)
                print(
                    f"stopped by signal {stop.signum} at step {step}; checkpoint saved in "
                    f"{ckpt.directory}; run the same command to resume",
                    file=out,
                    flush=True,
                )
                break
        settle(0)  # the final save below only ever sees a checked state
    batches.stop_and_rewind()
    ckpt.save(state, data_iter, cfg_dict)
    ckpt.close()
    writer.flush()
    writer.close()
    if is_main and not scratch:
        _write_curves(workdir, read_jsonl(metrics_path))
    return TrainResult(state, step, interrupted, resumed_from, workdir)


def _device_batch(first: int, local: list[dict], mesh) -> dict:
    """The k local batches of the dispatch starting at step `first` -> global device arrays
    (stacked on a leading K axis when k > 1)."""
    k = len(local)
    if k == 1:
        return to_global(local[0], mesh)
    stacked = {key: np.stack([b[key] for b in local]) for key in local[0]}
    return global_batch(stacked, mesh, 1)
