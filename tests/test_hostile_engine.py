"""Hostile cases that need a trained run (issue 20, case 3 and the goal): a damaged newest
checkpoint falls back to the newest intact one, in `train` (resume) and in `sample`; kill -9 in
the middle of a checkpoint write plus a damaged newest checkpoint still ends bitwise equal to an
undisturbed run. One straight run (tiny DCGAN, 16 px, 12 steps, a checkpoint every 3) is shared.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from fast_jax import configure

configure()  # before jax is imported

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_engine import (  # noqa: E402
    CHILD,
    child_env,
    finish,
    load_leaves,
    smoke,
    start_child,
    tiny_data,
)

from jaxsynth.errors import UserError  # noqa: E402
from jaxsynth.train.checkpoint import RunCheckpointer, abstract_state, load_trained  # noqa: E402

# The Grain data path: its checkpoints hold the data-iterator files these tests damage (with
# device-resident data the data position is the step and there is no iterator file).
STEPS = [
    "num_steps=12",
    "checkpoint_every=3",
    "train.sample_every=0",
    "train.ssim_every=0",
    "train.device_data=off",
]


def _biggest(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated array file": lambda c: _truncate(_biggest(c / "state" / "ocdbt.process_0" / "d")),
    "missing _METADATA": lambda c: (c / "state" / "_METADATA").unlink(),
    "missing state/": lambda c: shutil.rmtree(c / "state"),
    "flipped byte": lambda c: (
        lambda f: f.write_bytes(bytes([f.read_bytes()[0] ^ 1]) + f.read_bytes()[1:])
    )(_biggest(c / "state" / "ocdbt.process_0" / "d")),
}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("straight")
    info = finish(start_child(tmp, tmp / "run", tmp / "final.npz", *STEPS))
    assert info["step"] == 12
    return tmp


def _copy(straight: Path, dest: Path) -> Path:
    shutil.copytree(straight / "run", dest)
    return dest


def _same(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_sample_falls_back_past_each_kind_of_damage(straight, tmp_path):
    _, ref9, _, _ = load_trained(straight / "run", 9)
    for name, damage in DAMAGE.items():
        work = _copy(straight, tmp_path / name.replace(" ", "_").replace("/", ""))
        damage(work / "checkpoints" / "12")
        with pytest.raises(UserError, match="checkpoint step 12 is damaged"):
            load_trained(work, 12)  # an explicit --step: no fallback, one line
        lines: list[str] = []
        _, state, _, step = load_trained(work, log=lines.append)
        assert step == 9 and _same(state, ref9), name
        assert len(lines) == 1 and lines[0].startswith("checkpoint step 12 is damaged"), lines
        assert "using step 9" in lines[0]
        assert list((work / "damaged_checkpoints").glob("12-*")), "kept for inspection"
    work = _copy(straight, tmp_path / "all")
    for step in (6, 9, 12):
        DAMAGE["truncated array file"](work / "checkpoints" / str(step))
    with pytest.raises(UserError) as err:
        load_trained(work)
    message = str(err.value)
    assert "no intact checkpoint" in message and "step 6:" in message and "\n" not in message
    assert (work / "checkpoints" / "12").is_dir()  # nothing moved when nothing is usable


def test_training_restore_falls_back_on_a_damaged_data_iterator(straight, tmp_path):
    from jaxsynth.data.pipeline import make_loader
    from jaxsynth.train.mesh import make_mesh, replicated
    from jaxsynth.train.task import build_task

    work = _copy(straight, tmp_path / "w")
    (work / "checkpoints" / "12" / "data_iter" / "process_0-of-1.json").write_text('{"trunc')
    config = smoke(**dict(s.split("=") for s in STEPS))
    data = tiny_data()
    batch = {"image": np.zeros((8, 16, 16, 3), np.float32), "label": np.zeros((8,), np.int32)}
    rep = replicated(make_mesh())
    abstract = abstract_state(build_task(config), jax.random.PRNGKey(0), batch, rep, 16)
    it = iter(make_loader(data.arrays, global_batch_size=8, seed=0, worker_count=0))
    ckpt = RunCheckpointer(work)
    lines: list[str] = []
    state, _, step = ckpt.restore_newest_intact(abstract, it, lines.append)
    ckpt.close()
    assert step == 9 and int(state.step) == 9
    assert "checkpoint step 12 is damaged" in lines[0] and "using step 9" in lines[0]


# Kill the child from inside Orbax's write of the step-9 checkpoint (after the state item is
# written, while the data iterator is being saved): a real mid-write SIGKILL, not a guess.
KILL_MID_SAVE = textwrap.dedent(
    """
    import os, signal, grain
    _save = grain.checkpoint.CheckpointHandler.save
    def save(self, directory, *a, **k):
        if "/9.orbax-checkpoint-tmp" in str(directory):
            os.kill(os.getpid(), signal.SIGKILL)
        return _save(self, directory, *a, **k)
    grain.checkpoint.CheckpointHandler.save = save
    """
)


def test_kill9_mid_checkpoint_write_and_damaged_newest_finish_bitwise(straight, tmp_path):
    killed = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(KILL_MID_SAVE + CHILD.format(tests=str(Path(__file__).parent)))
    victim = subprocess.Popen(
        [sys.executable, str(script), str(killed), str(tmp_path / "x.npz"), *STEPS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
    )
    output, _ = victim.communicate(timeout=600)
    assert victim.returncode == -signal.SIGKILL, output[-3000:]
    names = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert any(n.startswith("9.orbax-checkpoint-tmp") for n in names), names
    assert "9" not in names and "6" in names
    DAMAGE["truncated array file"](killed / "checkpoints" / "6")  # and the newest is damaged

    resumed = start_child(tmp_path, killed, tmp_path / "b.npz", *STEPS)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    assert "checkpoint step 6 is damaged" in output and "using step 3" in output
    assert "resuming from step 3" in output
    a, b = load_leaves(straight / "final.npz"), load_leaves(tmp_path / "b.npz")
    assert len(a) == len(b) > 10
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), "differs from the undisturbed run"
