"""The engine's speed paths: device-resident data, late metric checks, automatic dispatch size.

Checks that going faster changed nothing it promises: batches drawn on device are one
permutation per epoch with the Grain path's augmentations (numpy reference), a planted NaN still
stops the run naming its step with no unchecked checkpoint written (also when the bad step
lands just before a checkpoint boundary), and kill -9 + resume is bitwise equal with
device-resident data.
"""

from __future__ import annotations

import io
import signal
import time

from fast_jax import configure

configure()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_engine import (  # noqa: E402
    PoisonedTask,
    finish,
    load_leaves,
    smoke,
    start_child,
    tiny_data,
)

from jaxsynth.errors import UserError  # noqa: E402
from jaxsynth.train.checkpoint import RunCheckpointer  # noqa: E402
from jaxsynth.train.defaults import engine_settings  # noqa: E402
from jaxsynth.train.device_data import (  # noqa: E402
    batch_indices,
    draw_batch,
    min_count,
    padded_size,
    use_device_data,
)
from jaxsynth.train.dispatch import PendingMetrics, auto_steps_per_dispatch  # noqa: E402
from jaxsynth.train.loop import TrainingDiverged, train  # noqa: E402
from jaxsynth.train.prefetch import dispatch_plan  # noqa: E402

QUIET = {"train.sample_every": 0, "train.ssim_every": 0}


def _reference_epoch(key, e, n, size):
    """The documented order: records sorted by their random 32-bit key, padding last."""
    bits = np.asarray(jax.random.bits(jax.random.fold_in(key, e), (size,), jnp.uint32))
    bits = np.where(np.arange(size) < n, bits, np.uint32(0xFFFFFFFF))
    return np.argsort(bits, kind="stable")[:n]


def test_batch_indices_are_one_permutation_per_epoch_across_batch_boundaries():
    key = jax.random.PRNGKey(3)
    n, b = 10, 4
    stream = np.concatenate([np.asarray(batch_indices(key, jnp.int32(s), n, b)) for s in range(8)])
    for e in range(3):  # 32 records = 3 full epochs + 2
        epoch = stream[e * n : (e + 1) * n]
        assert sorted(epoch.tolist()) == list(range(n))
        np.testing.assert_array_equal(epoch, _reference_epoch(key, e, n, n))
    assert not np.array_equal(stream[:n], stream[n : 2 * n])  # epochs reshuffled


def test_padded_arrays_draw_only_real_records_with_a_traced_count():
    """Padded device arrays (`put_on_device`): the count is an input, so one compiled draw
    serves every training-set size of a bucket, and padding rows are never drawn."""
    key = jax.random.PRNGKey(5)
    size, b = 16, 4
    fn = jax.jit(lambda s, n: batch_indices(key, s, n, b, size, least=3))
    for n in (3, 7, 16):
        stream = np.concatenate([np.asarray(fn(jnp.int32(s), jnp.int32(n))) for s in range(12)])
        for e in range(len(stream) // n):
            epoch = stream[e * n : (e + 1) * n]
            np.testing.assert_array_equal(epoch, _reference_epoch(key, e, n, size))
        assert stream.max() < n
    # the engine's padding: tiny sets exact, larger ones to a multiple of 256 whose least count
    # keeps a batch within two epochs
    assert [padded_size(n) for n in (100, 256, 257, 880, 1100)] == [100, 256, 512, 1024, 1280]
    assert [min_count(s) for s in (100, 256, 512, 1024)] == [100, 256, 257, 769]


def test_draw_batch_scales_and_augments_like_the_grain_path():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (6, 5, 5), dtype=np.uint8)
    data = {"image": jnp.asarray(images), "label": jnp.arange(6), "mask": jnp.asarray(masks)}
    key = jax.random.PRNGKey(1)
    plain = draw_batch(data, key, jnp.int32(2), 6, "none")
    idx = np.asarray(batch_indices(jax.random.fold_in(key, 0), jnp.int32(2), 6, 6))
    np.testing.assert_allclose(plain["image"], images[idx] / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(plain["label"], idx)
    aug = draw_batch(data, key, jnp.int32(2), 6, "flip_rot90")
    seen = set()
    for j in range(6):  # every image is some flip+rotation of its record, mask transformed alike
        x, m = np.asarray(plain["image"][j]), np.asarray(plain["mask"][j])
        ok = [
            (f, r)
            for f in (0, 1)
            for r in range(4)
            if np.array_equal(np.rot90(x[:, ::-1] if f else x, r), aug["image"][j])
            and np.array_equal(np.rot90(m[:, ::-1] if f else m, r), aug["mask"][j])
        ]
        assert ok, j
        seen.update(ok)
    assert len(seen) > 1  # not the identity for every record


def test_auto_device_data_and_dispatch_size():
    arrays = {"image": np.zeros((10, 4, 4, 3), np.uint8), "label": np.zeros(10, np.int32)}
    assert use_device_data("auto", arrays, 10_000)
    assert not use_device_data("auto", arrays, 100)
    assert use_device_data("on", arrays, 0) and not use_device_data("off", arrays, 10**9)
    with pytest.raises(UserError, match="train.device_data='yes'"):
        use_device_data("yes", arrays, 1)
    config = smoke(num_steps=1000, checkpoint_every=300)
    config.train.log_every = 50
    config.train.sample_every = 100
    config.train.ssim_every = 0
    settings = engine_settings(config)
    assert auto_steps_per_dispatch(settings, config, "gpu")[0] == 50  # gcd(50, 300, 100)
    assert auto_steps_per_dispatch(settings, config, "cpu")[0] == 1
    settings.steps_per_dispatch = 4
    assert auto_steps_per_dispatch(settings, config, "gpu") == (4, "configured")
    # a resumed run off a multiple of K steps singly to the next one
    assert list(dispatch_plan(5, 13, 4)) == [(5, 1), (6, 1), (7, 1), (8, 4), (12, 1)]


def test_pending_metrics_are_read_one_dispatch_late():
    pending = PendingMetrics()
    pending.push(0, 1, {"loss": jnp.float32(1.0)})
    pending.push(1, 1, {"loss": jnp.float32(2.0)})
    late = list(pending.pop(keep=1))
    assert [(f, float(m["loss"])) for f, _, m in late] == [(0, 1.0)] and len(pending) == 1
    assert [f for f, _, _ in pending.pop(keep=0)] == [1] and len(pending) == 0


def test_packed_metrics_unpack_by_name_for_one_and_k_steps():
    names = ["d_loss", "g_loss"]
    pending = PendingMetrics(names)
    pending.push(0, 1, jnp.asarray([1.0, 2.0], jnp.float32))
    pending.push(1, 3, jnp.asarray([[3.0, 4.0], [5.0, 6.0], [7.0, jnp.nan]], jnp.float32))
    (f1, k1, m1), (f2, k2, m2) = list(pending.pop(keep=0))
    assert (f1, k1, float(m1["d_loss"]), float(m1["g_loss"])) == (0, 1, 1.0, 2.0)
    assert (f2, k2) == (1, 3) and m2["d_loss"].tolist() == [3.0, 5.0, 7.0]
    assert m2["g_loss"][:2].tolist() == [4.0, 6.0] and np.isnan(m2["g_loss"][2])


@pytest.mark.parametrize("device_data", ["on", "off"])
def test_nan_just_before_a_checkpoint_is_caught_before_the_save(tmp_path, device_data):
    config = smoke(num_steps=8, checkpoint_every=5, **QUIET)
    config.train.device_data = device_data
    # step 4 ends at step 5, a checkpoint boundary
    poisoned = PoisonedTask(config, at=4)
    out = io.StringIO()
    with pytest.raises(TrainingDiverged) as err:
        train(config, tmp_path, tiny_data(), stream=out, task=poisoned)
    message = str(err.value)
    assert "at step 4:" in message and "last good checkpoint is step 0" in message
    ckpt = RunCheckpointer(tmp_path)
    assert ckpt.all_steps() == [0]  # the unchecked state at step 5 was never saved
    ckpt.close()
    on = "on device" in out.getvalue()
    assert on == (device_data == "on")


@pytest.mark.slow
def test_auto_puts_small_data_on_device_and_grain_resume_stays_exact(tmp_path):
    out = io.StringIO()
    train(
        smoke(num_steps=2, checkpoint_every=10, **QUIET), tmp_path / "auto", tiny_data(), stream=out
    )
    assert "data on device" in out.getvalue() and "train.device_data=auto" in out.getvalue()
    off = {**QUIET, "train.device_data": "off"}
    straight = train(smoke(num_steps=6, checkpoint_every=3, **off), tmp_path / "a", tiny_data())
    train(smoke(num_steps=3, checkpoint_every=3, **off), tmp_path / "b", tiny_data())
    resumed = train(smoke(num_steps=6, checkpoint_every=3, **off), tmp_path / "b", tiny_data())
    assert resumed.resumed_from == 3
    for x, y in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_kill9_then_resume_is_bitwise_identical_with_device_data(tmp_path):
    steps = [
        "num_steps=10",
        "checkpoint_every=3",
        "train.sample_every=0",
        "train.ssim_every=0",
        "train.device_data=on",
        "data.augment=flip_rot90",
    ]
    info_a = finish(start_child(tmp_path, tmp_path / "straight", tmp_path / "a.npz", *steps))
    assert info_a["step"] == 10
    killed = tmp_path / "killed"
    victim = start_child(tmp_path, killed, tmp_path / "x.npz", *steps, "pause=0.4")
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "6").is_dir():
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    output = victim.communicate(timeout=60)[0]
    assert "data on device" in output
    info_b = finish(start_child(tmp_path, killed, tmp_path / "b.npz", *steps))
    assert 6 <= info_b["resumed_from"] < 10 and info_b["step"] == 10
    a, b = load_leaves(tmp_path / "a.npz"), load_leaves(tmp_path / "b.npz")
    assert len(a) == len(b) > 10
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y), "resumed run differs from the uninterrupted one"


def test_unknown_device_data_mode_is_a_user_error(tmp_path):
    config = smoke(num_steps=1, **QUIET)
    config.train.device_data = "sometimes"
    with pytest.raises(UserError, match="train.device_data='sometimes'"):
        train(config, tmp_path, tiny_data())
