"""`jaxsynth train` / `jaxsynth sample` end to end on the built-in phantom source (tiny)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from fast_jax import configure  # noqa: E402

configure()  # before jax is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from jaxsynth.cli import main  # noqa: E402
from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.data.split import load_or_build_split  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUIET = ["--config.train.sample_every=0", "--config.train.ssim_every=0"]


@pytest.fixture(autouse=True)
def _no_late_xla_flag_warning(monkeypatch):
    """The one-line-error checks below read all of stderr. Whether main() also warns "XLA flags
    set after jax initialised" depends on whether an earlier test in the same xdist worker
    initialised jax (order-dependent), so this module's in-process main() calls skip the flags
    (they could not take effect in an initialised process anyway)."""
    monkeypatch.setenv("JAXSYNTH_NO_XLA_FLAGS", "1")


def test_train_then_sample_on_phantom(tmp_path, capsys):
    work = tmp_path / "run"
    config_spec = str(REPO / "configs" / "dcgan.py") + ":smoke"
    argv = ["train", "--config", config_spec, "--workdir", str(work), "--config.num_steps=2"]
    assert main(argv + QUIET) == 0
    assert "done: step 2" in capsys.readouterr().out
    # trained only on the training split's tumour images; val/test exist and are held out
    config = load_config(config_spec, ["--config.num_steps=2"])
    split = load_or_build_split(config, work)
    assert len(split.test) == 8 and len(split.val) == 8
    # a workdir with checkpoints resumes, without --config (its saved config is used)
    assert main(["train", "--workdir", str(work), "--config.num_steps=3"]) == 0
    assert "resuming from step 2" in capsys.readouterr().out

    out = tmp_path / "samples"
    argv = ["sample", "--workdir", str(work), "--num", "5", "--out", str(out), "--label", "tumour"]
    assert main(argv + ["--seed", "3"]) == 0
    pngs = sorted(out.glob("sample_*.png"))
    assert len(pngs) == 5
    with np.load(out / "samples.npz") as f:
        images, labels = f["images"], f["labels"]
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    assert list(labels) == [split.label_of("tumour")] * 5
    for i, p in enumerate(pngs):
        im = Image.open(p)
        assert im.mode == "RGB" and im.size == (16, 16)
        assert np.array_equal(np.asarray(im), images[i])
    side = json.loads((out / "samples.json").read_text())
    assert side["model"] == "dcgan" and side["step"] == 3 and side["seed"] == 3
    assert len(side["config_hash"]) == 16 and side["params"] == "ema"
    # same seed, same images; the unconditional tumour model refuses another class
    out2 = tmp_path / "again"
    assert (
        main(["sample", "--workdir", str(work), "--num", "5", "--out", str(out2), "--seed", "3"])
        == 0
    )
    with np.load(out2 / "samples.npz") as f:
        assert np.array_equal(f["images"], images)
    capsys.readouterr()
    assert (
        main(
            [
                "sample",
                "--workdir",
                str(work),
                "--num",
                "2",
                "--out",
                str(tmp_path / "other"),
                "--label",
                "normal",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "unconditional" in err and "\n" not in err


def test_train_bad_config_value_is_one_line(tmp_path, capsys):
    spec = str(REPO / "configs" / "wgan_gp.py") + ":smoke"
    code = main(["train", "--config", spec, "--workdir", str(tmp_path), "--config.task=nope"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "config.task='nope'" in err and "\n" not in err


def test_xla_flags_are_added_once_and_user_setting_wins():
    import subprocess

    code = (
        "import os; from jaxsynth import xla_flags; print(xla_flags.apply()); "
        "print(xla_flags.apply())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXSYNTH_NO_XLA_FLAGS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    first, second = out.stdout.split("\n")[:2]
    assert first == second == "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
    env["XLA_FLAGS"] = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split("\n")[0] == env["XLA_FLAGS"]


def _cache_probe(env: dict, extra: str = "") -> list[str]:
    """Run the commands' runtime setup in a fresh interpreter; return its printed lines."""
    import subprocess

    code = (
        "from jaxsynth import xla_flags; xla_flags.apply(compile_cache=True)\n"
        "import jax; print(jax.config.jax_compilation_cache_dir)\n" + extra
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


def test_commands_persistent_compilation_cache_location_and_overrides(tmp_path):
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("JAX_COMPILATION_CACHE_DIR", "JAXSYNTH_COMPILATION_CACHE", "XDG_CACHE_HOME")
    }
    xdg = tmp_path / "xdg"
    assert _cache_probe({**base, "XDG_CACHE_HOME": str(xdg)}) == [str(xdg / "jaxsynth" / "xla")]
    mine = tmp_path / "mine"
    env = {**base, "XDG_CACHE_HOME": str(xdg), "JAXSYNTH_COMPILATION_CACHE": str(mine)}
    assert _cache_probe(env) == [str(mine)]
    assert _cache_probe({**env, "JAXSYNTH_COMPILATION_CACHE": "off"}) == ["None"]
    users = tmp_path / "users"  # jax's own variable wins over ours
    assert _cache_probe({**env, "JAX_COMPILATION_CACHE_DIR": str(users)}) == [str(users)]


def test_commands_compilation_cache_is_hit_by_the_next_process_with_equal_results(tmp_path):
    """The second process loads the first one's executable (jax logs the hit) and computes the
    same bits: what a rerun after a kill relies on."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("JAX_COMPILATION_CACHE_DIR", "JAXSYNTH_COMPILATION_CACHE")
    }
    env["JAXSYNTH_COMPILATION_CACHE"] = str(tmp_path / "cache")
    extra = (
        "import logging, jax.numpy as jnp\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "msgs = []\n"
        "h = logging.Handler(); h.emit = lambda r: msgs.append(r.getMessage())\n"
        "lg = logging.getLogger('jax._src.compiler')\n"
        "lg.setLevel(logging.DEBUG); lg.addHandler(h)\n"
        "x = jnp.linspace(-1.0, 1.0, 48 * 48).reshape(48, 48)\n"
        "y = jax.jit(lambda a: jnp.tanh(a @ a.T) @ a + jnp.sin(a))(x)\n"
        "print(y.tobytes().hex()[:64], float(y.sum()))\n"
        "print(any('cache hit' in m and 'jit__lambda' in m for m in msgs))\n"
    )
    first = _cache_probe(env, extra)
    assert first[2] == "False"
    assert any(p.name.startswith("jit__lambda") for p in (tmp_path / "cache").iterdir())
    second = _cache_probe(env, extra)
    assert second[2] == "True"
    assert second[1] == first[1]
