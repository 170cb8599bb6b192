"""Host-to-device prefetch: the next global batches are read and put on device in a thread.

WHY: the engine's step is asynchronous on the device, but reading a batch from Grain, stacking K
of them and `make_array_from_process_local_data` all run on the host between dispatches; done in
the loop, the device idles for that long every step. Here a background thread runs them for the
next `size` dispatches while the current step runs.

Exactness: the thread advances the Grain iterator ahead of training, so a checkpoint taken now
would save a position `size` batches too far. Every produced item carries the iterator state
*after* it; `stop_and_rewind()` stops the thread and sets the iterator back to the state after
the last item the loop consumed, so the saved position is exactly what an unprefetched run saves.
The loop then starts a new prefetcher from that step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


def dispatch_plan(start: int, num_steps: int, steps_per_dispatch: int) -> Iterator[tuple[int, int]]:
    """(first step, k) of every dispatch from `start`: K steps while K remain, then 1 at a time.
    A resumed run not on a multiple of K takes single steps up to the next multiple, so the
    dispatches (hence the engine's log/checkpoint points) fall where an unresumed run's do."""
    step = start
    while step < num_steps:
        aligned = step % steps_per_dispatch == 0
        k = steps_per_dispatch if aligned and num_steps - step >= steps_per_dispatch else 1
        yield step, k
        step += k


class DevicePrefetcher:
    """Iterates `(device_batch, k)` for `plan`, producing up to `size` dispatches ahead.

    `produce(step, local_batches)` turns the k local batches of a dispatch into what the compiled
    step takes (global arrays on device). `size=0` produces synchronously in `__next__` (no
    thread), with the same results.
    """

    def __init__(
        self,
        data_iter: Any,
        plan: Iterator[tuple[int, int]],
        produce: Callable[[int, list[dict]], Any],
        size: int = 2,
    ):
        self._iter = data_iter
        self._plan = plan
        self._produce = produce
        self._size = max(0, int(size))
        self._consumed_state = data_iter.get_state()
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, self._size))
        self._thread: threading.Thread | None = None
        if self._size > 0:
            self._thread = threading.Thread(target=self._work, name="device-prefetch", daemon=True)
            self._thread.start()

    def _make(self, step: int, k: int) -> tuple[Any, int, Any]:
        local = [next(self._iter) for _ in range(k)]
        state = self._iter.get_state()
        return self._produce(step, local), k, state

    def _work(self) -> None:
        try:
            for step, k in self._plan:
                item = self._make(step, k)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_final(_DONE)
        except BaseException as e:  # re-raised in the training thread by __next__
            self._put_final(e)

    def _put_final(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self) -> tuple[Any, int]:
        if self._thread is None:
            step, k = next(self._plan)
            batch, k, state = self._make(step, k)
        else:
            item = self._queue.get()
            if item is _DONE:
                raise StopIteration
            if isinstance(item, BaseException):
                raise item
            batch, k, state = item
        self._consumed_state = state
        return batch, k

    def stop_and_rewind(self) -> None:
        """Stop producing; set the data iterator to just after the last consumed dispatch."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._iter.set_state(self._consumed_state)
