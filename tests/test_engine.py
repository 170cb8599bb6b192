"""The training engine: outputs, resume (in-process and after kill -9, bitwise), NaN guard,
4 devices vs 1.

Compile time dominates on CPU, so: tiny DCGAN (16 px), a persistent XLA compilation cache shared
by this file's subprocesses (identical programs compile once), and fast-compile XLA flags. The
runs being compared always share the same flags, so equality checks are unaffected.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fast_jax import CACHE, FAST_COMPILE, configure  # noqa: E402

configure()  # before jax is imported

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.train.checkpoint import RunCheckpointer  # noqa: E402
from jaxsynth.train.loop import TrainData, TrainingDiverged, train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def tiny_data(n: int = 32, size: int = 16, seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, n).astype(np.int32)
    return TrainData({"image": images, "label": labels}, images, ("normal", "tumour"))


def smoke(**overrides) -> object:
    items = [f"{k}={v}" for k, v in overrides.items()]
    return load_config(str(REPO / "configs" / "dcgan.py") + ":smoke", items)


class PoisonedTask:
    """The config's task with step `at`'s images replaced by NaN inside the compiled step (both
    data paths): exercises the engine's NaN guard without a knob in the production config."""

    def __init__(self, config, at: int):
        from jaxsynth.train.task import build_task

        self._task, self._at = build_task(config), at

    def __getattr__(self, name):
        return getattr(self._task, name)

    def train_step(self, state, batch, rng):
        import jax.numpy as jnp

        batch = dict(batch)
        batch["image"] = jnp.where(state.step == self._at, jnp.nan, batch["image"])
        return self._task.train_step(state, batch, rng)


def child_hooks(overrides: list[str]) -> tuple[list[str], list]:
    """Split `pause=S` (a `Pause` hook: the kill -9 tests' slow-down) from config overrides."""
    from jaxsynth.train.hooks import Pause

    hooks = [Pause(float(o.split("=", 1)[1])) for o in overrides if o.startswith("pause=")]
    return [o for o in overrides if not o.startswith("pause=")], hooks


# A child process: train the tiny DCGAN on tiny_data and dump every leaf of the final state.
CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np, jax
    sys.path.insert(0, {tests!r})
    from test_engine import child_hooks, smoke, tiny_data
    from jaxsynth.train.loop import train
    workdir, out, *overrides = sys.argv[1:]
    overrides, hooks = child_hooks(overrides)
    config = smoke(**dict(o.split("=", 1) for o in overrides))
    result = train(config, workdir, tiny_data(), hooks=hooks)
    leaves = jax.tree.leaves(result.state)
    np.savez(out, *[np.asarray(x) for x in leaves])
    print("RESULT " + json.dumps({{"step": result.step, "resumed_from": result.resumed_from,
                                  "devices": jax.device_count()}}))
    """
)


def child_env(devices: int = 1) -> dict:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    if FAST_COMPILE not in flags:
        flags += " " + FAST_COMPILE
    if devices > 1:
        flags += f" --xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = flags.strip()
    env["JAX_COMPILATION_CACHE_DIR"] = CACHE
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def start_child(tmp: Path, workdir: Path, out: Path, *overrides: str, devices: int = 1):
    script = tmp / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent)))
    return subprocess.Popen(
        [sys.executable, str(script), str(workdir), str(out), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(devices),
        cwd=str(REPO),
    )


def finish(proc) -> dict:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    line = [x for x in output.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def load_leaves(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def test_run_writes_logs_samples_curves_and_resumes(tmp_path):
    config = smoke(num_steps=6, checkpoint_every=3)
    result = train(config, tmp_path, tiny_data())
    assert result.step == 6 and result.resumed_from is None and not result.interrupted
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    loss_steps = [r["step"] for r in records if "d_loss" in r]
    assert loss_steps == [2, 4, 6]
    for r in records:
        for k, v in r.items():
            assert np.isfinite(v), (k, v)
    ssim = [r["ssim_to_real"] for r in records if "ssim_to_real" in r]
    assert len(ssim) == 2 and all(-1.0 <= s <= 1.0 for s in ssim)
    grid = Image.open(tmp_path / "samples" / "step_0000006.png")
    assert grid.mode == "RGB" and grid.size == (2 + 2 * 18, 2 + 2 * 18)  # 4 tiles of 16 px
    assert (tmp_path / "samples" / "step_0000003.png").is_file()
    for png in ("loss_curves.png", "ssim_curve.png"):
        assert Image.open(tmp_path / png).size[0] > 100
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    ckpt = RunCheckpointer(tmp_path)
    assert ckpt.all_steps() == [0, 3, 6]
    ckpt.close()
    assert int(result.state.step) == 6
    assert int(result.state["generator"].ema_updates) == 6

    config.num_steps = 8
    resumed = train(config, tmp_path, tiny_data())
    assert resumed.resumed_from == 6 and resumed.step == 8
    ckpt = RunCheckpointer(tmp_path)
    assert ckpt.all_steps() == [3, 6, 8]  # keep-3
    ckpt.close()


def test_nan_guard_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path):
    config = smoke(num_steps=6, checkpoint_every=3)
    config.train.sample_every = 0
    config.train.ssim_every = 0
    with pytest.raises(TrainingDiverged) as err:
        train(config, tmp_path, tiny_data(), task=PoisonedTask(config, at=4))
    message = str(err.value)
    assert "\n" not in message
    assert "at step 4:" in message and "loss=nan" in message
    assert "last good checkpoint is step 3" in message
    ckpt = RunCheckpointer(tmp_path)
    assert ckpt.latest_step() == 3
    ckpt.close()
    # the checkpoint restores and is finite: resuming without the poison runs to the end
    result = train(config, tmp_path, tiny_data())
    assert result.resumed_from == 3 and result.step == 6
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result.state))


def test_kill9_then_resume_is_bitwise_identical(tmp_path):
    steps = ["num_steps=12", "checkpoint_every=3", "train.sample_every=0", "train.ssim_every=0"]
    straight = start_child(tmp_path, tmp_path / "straight", tmp_path / "a.npz", *steps)
    info_a = finish(straight)
    assert info_a["step"] == 12

    killed_dir = tmp_path / "killed"
    victim = start_child(tmp_path, killed_dir, tmp_path / "x.npz", *steps, "pause=0.4")
    deadline = time.time() + 300
    while not (killed_dir / "checkpoints" / "6").is_dir():
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "x.npz").exists()
    ckpt = RunCheckpointer(killed_dir)
    last = ckpt.latest_step()
    ckpt.close()
    assert 6 <= last < 12

    info_b = finish(start_child(tmp_path, killed_dir, tmp_path / "b.npz", *steps))
    assert info_b["resumed_from"] == last and info_b["step"] == 12
    a, b = load_leaves(tmp_path / "a.npz"), load_leaves(tmp_path / "b.npz")
    assert len(a) == len(b) > 10
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), "resumed run differs from the uninterrupted one"


def test_four_devices_match_one(tmp_path):
    steps = ["num_steps=3", "checkpoint_every=100", "train.sample_every=0", "train.ssim_every=0"]
    four = start_child(tmp_path, tmp_path / "d4", tmp_path / "d4.npz", *steps, devices=4)
    one = start_child(tmp_path, tmp_path / "d1", tmp_path / "d1.npz", *steps, devices=1)
    info4, info1 = finish(four), finish(one)
    assert info4["devices"] == 4 and info1["devices"] == 1
    a, b = load_leaves(tmp_path / "d4.npz"), load_leaves(tmp_path / "d1.npz")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)


def test_k_steps_per_dispatch_matches_single_steps(tmp_path):
    quiet = {"train.sample_every": 0, "train.ssim_every": 0, "checkpoint_every": 3}
    single = train(smoke(num_steps=6, **quiet), tmp_path / "k1", tiny_data())
    scanned = train(
        smoke(num_steps=6, **quiet, **{"train.steps_per_dispatch": 3}), tmp_path / "k3", tiny_data()
    )
    assert int(scanned.state.step) == 6
    for x, y in zip(jax.tree.leaves(single.state), jax.tree.leaves(scanned.state), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    ckpt = RunCheckpointer(tmp_path / "k3")
    assert ckpt.all_steps() == [0, 3, 6]
    ckpt.close()


def test_ema_update_matches_numpy():
    import optax

    from jaxsynth.train.state import ModelState

    params = {"w": np.array([1.0, -2.0], np.float32)}
    state = ModelState.create(params, optax.sgd(0.5), ema_decay=0.9)
    p, ema = params["w"].astype(np.float64), params["w"].astype(np.float64)
    for t, g in enumerate([np.array([1.0, 1.0]), np.array([-2.0, 0.5]), np.array([0.3, 0.1])]):
        state = state.apply_gradients({"w": g.astype(np.float32)})
        p = p - 0.5 * g
        decay = min(0.9, (1 + t) / (10 + t))
        ema = decay * ema + (1 - decay) * p
    np.testing.assert_allclose(state.params["w"], p, rtol=1e-6)
    np.testing.assert_allclose(state.ema_params["w"], ema, rtol=1e-6)
    assert int(state.ema_updates) == 3


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import threading

    config = smoke(num_steps=12, checkpoint_every=5)
    config.train.sample_every = 0
    config.train.ssim_every = 0

    def send_sigterm_after_first_checkpoint():
        deadline = time.time() + 300
        while not (tmp_path / "checkpoints" / "5").is_dir() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # usually lets a step or two pass (0.3 s each), so the stop is mid-way
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=send_sigterm_after_first_checkpoint, daemon=True)
    killer.start()
    from jaxsynth.train.hooks import Pause

    result = train(config, tmp_path, tiny_data(), hooks=[Pause(0.3)])  # the handler stops it
    killer.join(timeout=10)
    # On a loaded machine the signal can still land right after checkpoint 5: accept 5 itself.
    assert result.interrupted and 5 <= result.step < 12
    ckpt = RunCheckpointer(tmp_path)
    assert ckpt.latest_step() == result.step  # saved where it stopped, not only at 5
    ckpt.close()
    assert signal.getsignal(signal.SIGTERM) == before  # handler restored afterwards


def test_hooks_run_when_due_and_only_ever_see_checked_states(tmp_path):
    """A hook that reads the state is called at its steps and at the end, after every pending
    dispatch was checked (the loop keeps one dispatch in flight otherwise); one that does not
    read the state (a pause) leaves the loop a dispatch ahead."""
    from jaxsynth.train.hooks import Pause

    class Recorder:
        reads_state = True

        def __init__(self):
            self.calls = []

        def due(self, prev, step, final):
            return step % 2 == 0 or final

        def __call__(self, state, step, ctx):
            assert int(jax.device_get(state.step)) == step
            ctx.scalars(step, {"recorded": float(step)})
            self.calls.append(step)

    config = smoke(num_steps=5, checkpoint_every=10)
    config.train.sample_every = 0
    config.train.ssim_every = 0
    recorder = Recorder()
    train(config, tmp_path, tiny_data(), hooks=[recorder, Pause(0.0)])
    assert recorder.calls == [2, 4, 5]
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "recorded" in r] == [2, 4, 5]
    # a NaN at step 3 stops the run before the hook could see the state of step 4
    recorder.calls.clear()
    with pytest.raises(TrainingDiverged):
        train(
            config, tmp_path / "nan", tiny_data(), task=PoisonedTask(config, at=3), hooks=[recorder]
        )
    assert recorder.calls == [2]
