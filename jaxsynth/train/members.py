"""The engine's member axis: M independent runs of one task trained in one compiled program.

WHY: the study trains dozens of small classifiers (a few hundred to ~2,000 32-px images, batch
32, 10 epochs) of one architecture. Through `train()` each is a run of its own, and on an
accelerator each run is dispatch-bound: the device idles between millisecond steps. Here M
*members* (same task, architecture, hyperparameters, batch size and augmentation; their own
training records, seed, class weights, step budget and validation interval) are stacked on a
leading member axis and the engine's device-data step (`steps.device_data_step`) is vmapped
over them, so one dispatch advances all M.

Each member's results equal those of training it alone through `train()` with the same seed:

* its state is initialised by the task's `init` from `PRNGKey(seed)` exactly as `train()`
  does (one member at a time, then stacked), and every step's key is `fold_in(rng, step)`;
* its records are padded to the members' common size (the largest `padded_size`), keeping its
  own `count` and data key (`device_data.seed_data_key(seed)`): the padding changes no draw
  (`device_data.pad_records`), so it sees the batches it sees alone;
* members have their own step budgets (`epochs * ceil(n / batch)` differs with n): all run
  to the largest budget, and a member past its budget is frozen in the compiled step
  (`jnp.where` on `step < budget` keeps its params, optimiser state and step counter);
* each member is validated on the shared validation arrays at every multiple of its
  `eval_every` up to its budget and at its budget (the `Validation` hook's schedule, its
  fixed-size padded batches and float64 totals), keeping its lowest-`val_<keep>` weights
  (`task.eval_variables`) on the host; the step runs `eval_step` vmapped over members, only at
  steps where some member is due, and records only for the members that are due.

Equality is up to floating point: vmapped convolutions and matmuls (grouped / batched on the
member axis) and scanned steps may round differently from the unbatched ones (on XLA:CPU the
validation losses came out equal or within ~2e-6 relative, predictions within ~1e-7;
tests/test_members.py holds them to 1e-5). A best epoch could flip only on a near-tie.

Like `train()` the loop never waits on the device between steps: the steps between two
evaluation points run in `lax.scan` dispatches of 1, 2, 4, ... steps (a power-of-two split of
each segment, so at most log2(K)+1 programs; unrolled, and one step per dispatch, on CPU as in
`dispatch.auto_steps_per_dispatch`), and each dispatch's packed metrics are read one dispatch
late, all checked before any evaluation. A non-finite loss of an active member stops the run
with one line naming the member and the step (`TrainingDiverged`).

No checkpoints, TensorBoard or metrics files: these are scratch runs (`train(...,
scratch=True)`). WHY: the study caches each finished member on disk itself; a family stage
killed midway retrains, which for these models costs less than checkpointing M states would.
Compiled programs are shared between calls with the same task `cache_key`, member count and
shapes (`steps.cached_programs`). One device: the member axis is the parallelism (no mesh).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsynth.errors import UserError
from jaxsynth.train.device_data import (
    check_augment,
    draw_batch,
    pad_records,
    padded_size,
    seed_data_key,
)
from jaxsynth.train.dispatch import MAX_AUTO_K, PendingMetrics
from jaxsynth.train.hooks import eval_batches
from jaxsynth.train.loop import TrainingDiverged, sample_batch
from jaxsynth.train.steps import array_shapes, cached_programs, device_data_step
from jaxsynth.train.task import Task


@dataclasses.dataclass
class Member:
    """One run on the member axis: its training records (`image` uint8 (N, H, W, 3), `label`,
    optional `weight` / `mask`: what `TrainData.arrays` holds), its seed (`config.seed` of the
    lone run), its step budget and its validation interval in steps (0: only at the end)."""

    arrays: dict[str, np.ndarray]
    seed: int
    num_steps: int
    eval_every: int


@dataclasses.dataclass
class MemberResult:
    """What a member's `Validation` hook would hold after its lone run: `best` (host numpy
    `task.eval_variables` of the evaluation with the lowest `val_<keep>`, the first on ties),
    `best_step`, `best_value`, `history` (one dict per evaluation: `step`, `val_<name>` per
    `eval_step` sum, and the mean of each training metric over the member's steps since its
    previous evaluation, under the metric's own name, e.g. `loss`), `step`, the member's
    final step counter, and `final`, its final `task.eval_variables` (host numpy; what
    `train()`'s returned state holds). Both are the member's at its budget: it is frozen after
    it while longer members train on."""

    best: Any
    best_step: int
    best_value: float
    history: list[dict]
    step: int = 0
    final: Any = None


@dataclasses.dataclass
class MemberPrograms:
    """The jitted programs of one (task, member count, shapes): per-member init, the vmapped
    K-step advance (by K), the vmapped evaluation and eval variables."""

    init: Any
    advance: Any  # k -> jitted (states, arrays, budgets) -> (states, metrics (k, M, names))
    evaluate: Any  # jitted (states, batch) -> {name: (M,) sums}
    eval_variables: Any  # jitted states -> stacked eval variables
    metric_names: list[str]


def _build_programs(task: Task, batch_size: int, augment: str) -> MemberPrograms:
    names: list[str] = []

    def draw(arrays, step):
        # least=batch_size: every member holds >= batch_size records (checked), so a batch
        # spans at most two epochs, whatever the members' common padding
        return draw_batch(arrays, arrays["data_key"], step, batch_size, augment, least=batch_size)

    step = jax.vmap(device_data_step(task, draw, names))

    def advance_one(states, arrays, budgets):
        new, metrics = step(states, arrays)
        active = states.step < budgets

        def keep(n, o):
            return jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

        return jax.tree.map(keep, new, states), metrics

    unroll = jax.default_backend() == "cpu"  # see steps.make_step_fns
    cache: dict[int, Any] = {}

    def advance(k: int):
        if k not in cache:
            cache[k] = jax.jit(
                lambda states, arrays, budgets: jax.lax.scan(
                    lambda s, _: advance_one(s, arrays, budgets),
                    states,
                    None,
                    length=k,
                    unroll=unroll,
                ),
                donate_argnums=0,
            )
        return cache[k]

    return MemberPrograms(
        init=jax.jit(task.init),
        advance=advance,
        evaluate=jax.jit(jax.vmap(task.eval_step, in_axes=(0, None))),
        eval_variables=jax.jit(jax.vmap(task.eval_variables)),
        metric_names=names,
    )


def eval_steps(num_steps: int, every: int) -> list[int]:
    """The steps a lone run with `Validation(every=every)` evaluates at: every multiple of
    `every` up to `num_steps`, and `num_steps`."""
    points = set(range(every, num_steps + 1, every)) if every > 0 else set()
    return sorted(points | {num_steps})


def dispatch_sizes(length: int, max_k: int) -> list[int]:
    """`length` steps as dispatches of powers of two, largest first, none over `max_k`: few
    distinct programs (scan lengths), few dispatches."""
    top = 1 << (max(1, max_k).bit_length() - 1)
    out = []
    while length > 0:
        k = min(top, 1 << (length.bit_length() - 1))
        out.append(k)
        length -= k
    return out


def _stack_records(members: list[Member], size: int) -> dict[str, np.ndarray]:
    padded = [pad_records(m.arrays, size) for m in members]
    out = {key: np.stack([p[key] for p in padded]) for key in padded[0]}
    out["count"] = np.asarray([len(m.arrays["image"]) for m in members], np.int32)
    out["data_key"] = np.stack([np.asarray(seed_data_key(m.seed)) for m in members])
    return out


def _check(members: list[Member], batch_size: int, augment: str) -> None:
    if not members:
        raise ValueError("no members to train")
    first = members[0].arrays
    for i, m in enumerate(members):
        n = len(m.arrays["image"])
        if set(m.arrays) != set(first) or m.arrays["image"].shape[1:] != first["image"].shape[1:]:
            raise ValueError(
                f"member {i}'s arrays differ from member 0's in keys or image shape "
                "(members share one program)"
            )
        if batch_size > n:
            raise UserError(
                f"member {i}: batch_size={batch_size} is larger than the {n} training images"
            )
        if m.num_steps < 1:
            raise ValueError(f"member {i}: num_steps={m.num_steps} (needs at least 1)")
    check_augment(augment, first)


def train_members(
    task: Task,
    members: list[Member],
    val_arrays: dict[str, np.ndarray],
    *,
    batch_size: int,
    augment: str = "none",
    keep: str = "loss",
    size: int | None = None,
    steps_per_dispatch: int = 0,
    eval_batch_size: int = 256,
) -> list[MemberResult]:
    """Train every member of `members` (one task) in one vmapped program; one `MemberResult`
    per member, in order, equal to what a lone `train()` of that member (seed, `num_steps`,
    device data, a `Validation(every=eval_every, keep=keep)` hook) keeps (module docstring).

    `val_arrays`: `{"image" uint8, "label"}`, shared by all members (`task.eval_step` sums).
    `size`: the records each member is padded to (default: the largest `padded_size` of the
    members; pass a larger common one so calls over different members share programs).
    `steps_per_dispatch`: the most steps in one dispatch (0: 1 on CPU, `MAX_AUTO_K` on an
    accelerator). `eval_batch_size`: rows per validation batch (`Validation.batch_size`)."""
    _check(members, batch_size, augment)
    m_count = len(members)
    need = max(padded_size(len(m.arrays["image"])) for m in members)
    size = need if size is None else int(size)
    if size < max(len(m.arrays["image"]) for m in members):
        raise ValueError(f"size={size} is smaller than a member's training set")
    host = _stack_records(members, size)
    parts = ("members", m_count, batch_size, augment, array_shapes(host), jax.default_backend())
    programs: MemberPrograms = cached_programs(
        task, parts, lambda: _build_programs(task, batch_size, augment)
    )
    arrays = jax.device_put(host)
    budgets_host = np.asarray([m.num_steps for m in members], np.int32)
    budgets = jax.device_put(budgets_host)

    sample = sample_batch(members[0].arrays, batch_size)
    states = [programs.init(jax.random.PRNGKey(int(m.seed)), sample) for m in members]
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    due_at: dict[int, list[int]] = {}
    for i, m in enumerate(members):
        for s in eval_steps(m.num_steps, m.eval_every):
            due_at.setdefault(s, []).append(i)
    max_k = int(steps_per_dispatch) or (1 if jax.default_backend() == "cpu" else MAX_AUTO_K)

    names = programs.metric_names
    pending = PendingMetrics(names)
    sums: dict[str, np.ndarray] = {}
    counts = np.zeros(m_count, np.int64)

    def settle(keep_newest: int) -> None:
        """Check (and add to the members' windows) every pending dispatch but the newest."""
        nonlocal counts
        for first, k, metrics in pending.pop(keep_newest):
            steps = first + np.arange(k)
            active = steps[:, None] < budgets_host[None, :]  # (k, M)
            ordered = sorted(metrics, key=lambda n: (0 if "loss" in n else 1, n))
            values = {n: np.reshape(metrics[n], (k, m_count)) for n in ordered}
            bad = {n: active & ~np.isfinite(v) for n, v in values.items()}
            if any(b.any() for b in bad.values()):
                i, m = np.argwhere(np.any(list(bad.values()), axis=0))[0]  # earliest step
                name = next(n for n in ordered if bad[n][i, m])
                raise TrainingDiverged(
                    f"member {m} (seed {members[m].seed}) diverged at step {first + i}: "
                    f"{name}={float(values[name][i, m])} is not finite; stopped (a scratch run: "
                    "nothing saved)"
                )
            for name in names:
                window = np.where(active, values[name].astype(np.float64), 0.0).sum(0)
                sums[name] = sums.get(name, 0.0) + window
            counts = counts + active.sum(0)

    batches = eval_batches(val_arrays, eval_batch_size)
    results = [MemberResult(None, -1, float("inf"), []) for _ in members]
    step = 0
    for point in sorted(due_at):
        for k in dispatch_sizes(point - step, max_k):
            states, metrics = programs.advance(k)(states, arrays, budgets)
            pending.push(step, k, metrics)
            step += k
            settle(1)
        settle(0)  # every step up to here is checked before anything reads the state
        due = due_at[point]
        outs = jax.device_get([programs.evaluate(states, b) for b in batches])
        improved = []
        for m in due:
            totals = {
                name: float(np.sum([np.asarray(o[name][m], np.float64) for o in outs]))
                for name in outs[0]
            }
            count = max(totals.pop("count"), 1.0)
            values = {f"val_{name}": v / count for name, v in totals.items()}
            train = {name: float(sums[name][m] / max(counts[m], 1)) for name in names}
            for name in names:
                sums[name][m] = 0.0
            counts[m] = 0
            results[m].history.append({"step": point, **values, **train})
            value = values.get(f"val_{keep}") if keep else None
            if value is not None and value < results[m].best_value:
                results[m].best_value, results[m].best_step = value, point
                improved.append(m)
        if improved:
            variables = programs.eval_variables(states)
            for m in improved:
                results[m].best = jax.tree.map(
                    np.asarray, jax.device_get(jax.tree.map(lambda x, m=m: x[m], variables))
                )
    settle(0)
    steps, final = jax.device_get((states.step, programs.eval_variables(states)))
    for m, r in enumerate(results):
        r.step = int(steps[m])
        r.final = jax.tree.map(lambda x, m=m: np.asarray(x[m]), final)
    return results
