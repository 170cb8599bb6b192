"""How the engine keeps the device busy: dispatch size, late metric checks, device-data feeds.

WHY: `jax.device_get(metrics)` after every step blocks the host until the device has finished
that step, so the next dispatch (and its input transfer) never overlaps the running one; on a
fast accelerator the loop then runs at host speed. Here each dispatch's metrics start copying to
the host as soon as it is queued (`copy_to_host_async`) and are read **one dispatch late**: the
host blocks on dispatch n only after dispatch n+1 is queued, so the device never idles waiting
for the host. The NaN guard keeps its promise because every pending dispatch is checked before
anything uses the state (checkpoint, sample grid, signal stop, the end of the run): a
checkpoint is never written from a state whose metrics have not all been checked, and a
non-finite value still names its exact step.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from typing import Any

import jax


def auto_steps_per_dispatch(settings, config, backend: str | None = None) -> tuple[int, str]:
    """(K, why) for `train.steps_per_dispatch` = 0 / "auto", else the configured K.

    GPU/TPU: every step between two engine events in one `lax.scan` (K = gcd of the non-zero
    log / checkpoint / sample / SSIM / FID intervals, capped at `MAX_AUTO_K`), so events fall
    on dispatch boundaries. CPU: 1 (measured fastest: XLA:CPU runs convolutions in a loop body
    far slower, so the engine unrolls K steps there, which only adds compile time)."""
    value = settings.steps_per_dispatch
    if value not in (0, "0", "auto"):
        k = int(value)
        return max(1, k), "configured"
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return 1, "auto: CPU"
    every = [
        int(settings.log_every),
        int(config.checkpoint_every),
        int(settings.sample_every),
        int(settings.ssim_every),
        int(settings.fid_every or 0),
    ]
    k = 0
    for e in every:
        if e > 0:
            k = math.gcd(k, e)
    k = min(k or MAX_AUTO_K, MAX_AUTO_K, max(1, int(config.num_steps)))
    return max(1, k), f"auto: {backend}, steps between engine events"


MAX_AUTO_K = 200


class PendingMetrics:
    """Device metrics of dispatches not yet checked, oldest first: (first step, k, metrics).

    With `names`, each dispatch's metrics are one packed vector ((M,) or (K, M), see
    `steps.make_step_fns`), unpacked into {name: value(s)} when fetched."""

    def __init__(self, names: list | None = None) -> None:
        self._queue: collections.deque = collections.deque()
        self._names = names

    def push(self, first: int, k: int, metrics: dict[str, jax.Array]) -> None:
        for leaf in jax.tree.leaves(metrics):
            try:
                leaf.copy_to_host_async()
            except AttributeError:  # already a host value
                pass
        self._queue.append((first, k, metrics))

    def pop(self, keep: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """Fetch (blocking) and yield every pending dispatch but the newest `keep`."""
        while len(self._queue) > keep:
            first, k, metrics = self._queue.popleft()
            host = jax.device_get(metrics)
            if self._names is not None:
                host = {name: host[..., j] for j, name in enumerate(self._names)}
            yield first, k, host

    def __len__(self) -> int:
        return len(self._queue)


class DeviceDataFeed:
    """The `DevicePrefetcher` interface for device-resident data: every dispatch gets the same
    on-device arrays (the compiled step draws its own batch from `state.step`); nothing to
    rewind, the position is the step."""

    def __init__(self, data: dict[str, jax.Array], plan: Iterator[tuple[int, int]]):
        self._data = data
        self._plan = plan

    def __iter__(self) -> DeviceDataFeed:
        return self

    def __next__(self) -> tuple[Any, int]:
        _, k = next(self._plan)
        return self._data, k

    def stop_and_rewind(self) -> None:
        pass
