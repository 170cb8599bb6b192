"""StyleGAN2-ADA on the engine: the lazy regularisers fire inside the jitted step at the right
steps, ADA's p rises when D overfits and falls when it cannot, kill -9 + resume is bitwise equal
to an uninterrupted run (p, counters, EMA ramp included), and `jaxsynth sample --truncation`."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import time
from pathlib import Path

from fast_jax import configure  # noqa: E402

configure()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.train.checkpoint import RunCheckpointer  # noqa: E402
from jaxsynth.train.loop import TrainData  # noqa: E402
from jaxsynth.train.task import build_task  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from test_engine import child_env, finish, load_leaves  # noqa: E402


def smoke(*overrides: str):
    return load_config(str(REPO / "configs" / "stylegan2.py") + ":smoke", list(overrides))


def tiny_data(n: int = 8, size: int = 32, seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.ones(n, np.int32)
    return TrainData({"image": images, "label": labels}, None, ("normal", "tumour"))


def run_steps(config, images: np.ndarray, n: int):
    """The task's jitted step on fixed real batches (cycled); returns states' aux per step."""
    task = build_task(config)
    batch0 = {"image": jnp.asarray(images[: config.batch_size]), "label": jnp.ones(8, jnp.int32)}
    state = task.init(jax.random.key(0), batch0)

    @jax.jit
    def step(st, batch):
        new, metrics = task.train_step(st, batch, jax.random.fold_in(st.rng, st.step))
        return new.replace(step=st.step + 1), metrics

    auxes = []
    for _ in range(n):
        state, _ = step(state, batch0)
        auxes.append({k: float(v) for k, v in state.aux.items()})
    return auxes


@pytest.mark.slow
def test_lazy_regularisers_fire_inside_the_step_at_the_right_steps():
    x = np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    auxes = run_steps(smoke("stylegan.r1_interval=3", "stylegan.pl_interval=2"), x, 7)
    r1 = [a["r1_last"] for a in auxes]
    pl = [a["pl_last"] for a in auxes]
    # a value is (re)computed only at steps 0, 3, 6 (R1) and 0, 2, 4, 6 (PL)
    r1_changes = [i for i in range(7) if i == 0 or r1[i] != r1[i - 1]]
    pl_changes = [i for i in range(7) if i == 0 or pl[i] != pl[i - 1]]
    assert r1_changes == [0, 3, 6] and all(v > 0 for v in r1)
    assert pl_changes == [0, 2, 4, 6] and all(v > 0 for v in pl)
    assert auxes[0]["pl_mean"] > 0


@pytest.mark.slow
def test_static_phases_compute_what_the_dynamic_step_computes():
    """The engine's per-phase programs (`step_phase`, CPU's default) give the values of the one
    dynamic step over all four phases of the smoke schedule (R1 every 2, PL every 3 steps:
    steps 0-3 are both, neither, R1, PL)."""
    cfg = smoke("stylegan.r1_interval=2", "stylegan.pl_interval=3")
    task = build_task(cfg)
    x = np.random.default_rng(3).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    batch = {"image": jnp.asarray(x), "label": jnp.ones(8, jnp.int32)}
    state0 = task.init(jax.random.key(0), batch)
    want = [(True, True), (False, False), (False, True), (True, False), (False, True)]
    assert [task.step_phase(i) for i in range(5)] == want

    def make(phase):
        @jax.jit
        def step(st, b):
            rng = jax.random.fold_in(st.rng, st.step)
            if phase is None:
                return task.train_step(st, b, rng)
            return task.train_step(st, b, rng, phase=phase)

        return step

    dynamic, static = make(None), {}
    a = b = state0
    for i in range(4):
        phase = task.step_phase(i)
        static.setdefault(phase, make(phase))
        a, ma = dynamic(a, batch)
        b, mb = static[phase](b, batch)
        a, b = a.replace(step=a.step + 1), b.replace(step=b.step + 1)
        assert sorted(ma) == sorted(mb)
        for name in ma:
            np.testing.assert_allclose(mb[name], ma[name], rtol=2e-4, atol=1e-6, err_msg=name)
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(la.dtype, jax.dtypes.prng_key):
            la, lb = jax.random.key_data(la), jax.random.key_data(lb)
        np.testing.assert_allclose(np.asarray(lb), np.asarray(la), rtol=2e-4, atol=1e-5)


@pytest.mark.slow
def test_ada_p_rises_when_d_overfits_a_tiny_set_and_falls_otherwise():
    x = np.random.default_rng(2).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    # p moves 8/400 = 0.02 per step; no R1/PL/mixing: a smaller program to compile
    fast = ("ada.interval=1", "ada.kimg=0.4", "stylegan.r1_gamma=0.0", "stylegan.pl_weight=0.0")
    # D at a high lr memorises 8 images: D(real) > 0 for (nearly) all, r_t > 0.6 -> p rises
    rising = run_steps(smoke(*fast, "optim.d_lr=0.01", "optim.g_lr=0.0"), x, 20)
    p = [a["ada_p"] for a in rising]
    assert p[-1] >= 0.1 and p[-1] > p[len(p) // 2] > 0
    # a frozen random D cannot overfit: r_t stays below the target -> p falls from 0.5
    falling = run_steps(smoke(*fast, "ada.p_init=0.5", "optim.d_lr=0.0"), x, 10)
    p = [a["ada_p"] for a in falling]
    assert p[-1] < 0.5 - 0.1 and all(b <= a for a, b in zip(p, p[1:], strict=False))


CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np, jax
    sys.path.insert(0, {tests!r})
    from test_engine import child_hooks
    from test_stylegan2_task import smoke, tiny_data
    from jaxsynth.train.loop import train
    workdir, out, *overrides = sys.argv[1:]
    overrides, hooks = child_hooks(overrides)
    result = train(smoke(*overrides), workdir, tiny_data(), hooks=hooks)
    np.savez(out, *[np.asarray(x) for x in jax.tree.leaves(result.state)])
    print("RESULT " + json.dumps({{"step": result.step, "resumed_from": result.resumed_from,
                                  "p": float(result.state.aux["ada_p"])}}))
    """
)


def start(tmp: Path, workdir: Path, out: Path, *overrides: str):
    import subprocess

    script = tmp / "child_sg2.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent)))
    return subprocess.Popen(
        [sys.executable, str(script), str(workdir), str(out), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(1),
        cwd=str(REPO),
    )


@pytest.mark.slow  # 145 s on the quiet 2-core CPU (three CLI processes, each compiling)
def test_kill9_then_resume_is_bitwise_identical_with_p_and_counters(tmp_path):
    # R1 every 2, PL every 3, ADA every 2 steps at a speed that moves p visibly: a resume that
    # lost p, the ADA accumulator, pl_mean or the EMA ramp would differ in the final params.
    steps = ["num_steps=10", "checkpoint_every=3", "train.sample_every=0", "ada.kimg=0.5"]
    steps.append("ada.p_init=0.3")  # p moves by ±16/500 per adjustment: stays inside (0, 1)
    info_a = finish(start(tmp_path, tmp_path / "straight", tmp_path / "a.npz", *steps))
    assert info_a["step"] == 10 and 0 < info_a["p"] < 1 and info_a["p"] != pytest.approx(0.3)
    killed = tmp_path / "killed"
    victim = start(tmp_path, killed, tmp_path / "x.npz", *steps, "pause=0.4")
    kill_at = 3 * int(np.random.default_rng().integers(1, 3))  # a random checkpoint: 3 or 6
    deadline = time.time() + 300
    while not (killed / "checkpoints" / str(kill_at)).is_dir():
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(float(np.random.default_rng().uniform(0, 0.8)))  # mid-way between checkpoints
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    ckpt = RunCheckpointer(killed)
    last = ckpt.latest_step()
    ckpt.close()
    assert kill_at <= last < 10
    info_b = finish(start(tmp_path, killed, tmp_path / "b.npz", *steps))
    assert info_b["resumed_from"] == last and info_b["step"] == 10
    a, b = load_leaves(tmp_path / "a.npz"), load_leaves(tmp_path / "b.npz")
    assert len(a) == len(b) > 20
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), "resumed run differs from the uninterrupted one"
    assert info_b["p"] == info_a["p"]


@pytest.mark.slow
def test_sample_cli_writes_n_images_with_truncation(tmp_path, capsys):
    from jaxsynth.cli import main

    work = tmp_path / "run"
    rc = main(
        [
            "train",
            "--config",
            str(REPO / "configs" / "stylegan2.py") + ":smoke",
            "--workdir",
            str(work),
            "--config.num_steps=2",
            "--config.checkpoint_every=2",
            "--config.train.sample_every=0",
        ]
    )
    assert rc == 0
    outs = {}
    for psi in (1.0, 0.0):
        out = tmp_path / f"out{psi}"
        args = ["sample", "--workdir", str(work), "--out", str(out), "--num", "5"]
        assert main(args + ["--truncation", str(psi), "--seed", "3"]) == 0
        assert len(list(out.glob("sample_*.png"))) == 5
        side = json.loads((out / "samples.json").read_text())
        assert side["num"] == 5 and side["truncation"] == psi
        with np.load(out / "samples.npz") as z:
            outs[psi] = z["images"].astype(np.float64)
    # ψ = 0 maps every z to the mean w: samples differ only by the noise inputs
    spread = {psi: imgs.std(axis=0).mean() for psi, imgs in outs.items()}
    assert spread[0.0] < spread[1.0]
    capsys.readouterr()
