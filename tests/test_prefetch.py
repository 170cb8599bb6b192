"""Host-to-device prefetch (jaxsynth.train.prefetch) and the ahead-of-time compiled engine step.

* the prefetcher yields exactly the batches, in the same order and grouping, as reading the Grain
  iterator inline, for K = 1 and K > 1 with a tail;
* `stop_and_rewind()` leaves the iterator where the consumed batches end (so a checkpoint saves
  the same data position as an unprefetched run), even when the thread has read further ahead;
* errors in the thread reach the training loop;
* the engine with prefetch (default) trains to the same state as with `train.prefetch=0`, across
  a mid-run checkpoint (which rewinds and restarts the prefetcher), and logs its compile time.
"""

from __future__ import annotations

import io
import time

import jax
import numpy as np
import pytest

from jaxsynth.data.pipeline import make_loader
from jaxsynth.train.prefetch import DevicePrefetcher, dispatch_plan


def loader(n: int = 24, batch: int = 4):
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
        "label": np.arange(n, dtype=np.int32),
    }
    return make_loader(arrays, global_batch_size=batch, seed=5, augment="flip")


def labels_of(local: list[dict]) -> list[list[int]]:
    return [b["label"].tolist() for b in local]


def test_dispatch_plan_groups_k_then_ones():
    assert list(dispatch_plan(0, 7, 3)) == [(0, 3), (3, 3), (6, 1)]
    assert list(dispatch_plan(5, 7, 1)) == [(5, 1), (6, 1)]
    assert list(dispatch_plan(7, 7, 2)) == []


@pytest.mark.parametrize("k_steps, size", [(1, 2), (3, 2), (3, 0), (2, 5)])
def test_prefetch_yields_the_inline_batches_in_order(k_steps, size):
    inline_it = iter(loader())
    expected = [
        labels_of([next(inline_it) for _ in range(k)]) for _, k in dispatch_plan(0, 10, k_steps)
    ]
    pf = DevicePrefetcher(
        iter(loader()), dispatch_plan(0, 10, k_steps), lambda s, local: labels_of(local), size
    )
    got = [batch for batch, _ in pf]
    assert got == expected
    assert sum(len(g) for g in got) == 10


def test_stop_and_rewind_restores_the_consumed_position():
    it = iter(loader())
    pf = DevicePrefetcher(it, dispatch_plan(0, 100, 1), lambda s, local: labels_of(local), 4)
    first = [next(pf)[0] for _ in range(3)]
    deadline = time.time() + 10
    while pf._queue.qsize() < 4 and time.time() < deadline:  # let the thread run ahead
        time.sleep(0.01)
    pf.stop_and_rewind()
    assert it.get_state() != {} and next(it)["label"].tolist() == next_after(3)
    assert first == [[b] for b in batches_inline(3)]


def batches_inline(n: int) -> list[list[int]]:
    it = iter(loader())
    return [next(it)["label"].tolist() for _ in range(n)]


def next_after(n: int) -> list[int]:
    return batches_inline(n + 1)[-1]


def test_errors_in_the_thread_reach_the_loop():
    def boom(step, local):
        if step == 2:
            raise RuntimeError("bad batch at step 2")
        return step

    pf = DevicePrefetcher(iter(loader()), dispatch_plan(0, 5, 1), boom, 2)
    assert [next(pf)[0], next(pf)[0]] == [0, 1]
    with pytest.raises(RuntimeError, match="bad batch at step 2"):
        next(pf)
    pf.stop_and_rewind()


def test_engine_with_prefetch_equals_without_and_logs_compile_time(tmp_path):
    from test_engine import smoke, tiny_data

    from jaxsynth.train.loop import train

    quiet = {"train.sample_every": 0, "train.ssim_every": 0, "checkpoint_every": 2}
    out = io.StringIO()
    with_pf = train(smoke(num_steps=5, **quiet), tmp_path / "pf", tiny_data(), stream=out)
    without = train(
        smoke(num_steps=5, **quiet, **{"train.prefetch": 0}), tmp_path / "inline", tiny_data()
    )
    for x, y in zip(jax.tree.leaves(with_pf.state), jax.tree.leaves(without.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    log = out.getvalue()
    assert "compiled the train step (1 step per dispatch) in" in log
