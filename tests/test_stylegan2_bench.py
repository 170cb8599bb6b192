"""bench/stylegan2_bench.py and its PyTorch twin (bench/torch_stylegan2.py): the lazy-cycle
weights, and — when a torch interpreter is available (env JAXSYNTH_TORCH_PYTHON, or torch in
this one) — that the twin is the same network as jaxsynth's at :smoke size: equal G and D
parameter counts, and with jaxsynth's (perturbed) parameters loaded, the same mapping output,
synthesis output, D logits and ADA warp."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from fast_jax import configure  # noqa: E402

configure()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import traverse_util  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.models import ada  # noqa: E402
from jaxsynth.train.task import build_task  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from stylegan2_bench import cycle_kinds, twin_spec  # noqa: E402


def torch_python() -> str | None:
    env = os.environ.get("JAXSYNTH_TORCH_PYTHON", "")
    if env and Path(env).is_file():
        return env
    return sys.executable if importlib.util.find_spec("torch") else None


def test_cycle_weights_study_schedule():
    kinds = cycle_kinds(16, 4)  # R1 every 16, PL every 4
    assert {k: round(v["weight"] * 16) for k, v in kinds.items()} == {
        "r1+pl": 1,
        "plain": 12,
        "pl": 3,
    }
    for name, k in kinds.items():
        parts = name.split("+")
        assert ("r1" in parts) == (k["step"] % 16 == 0)
        assert ("pl" in parts) == (k["step"] % 4 == 0)
    assert cycle_kinds(0, 0) == {"plain": {"step": 1, "weight": 1.0}}


def test_twin_matches_jax_at_smoke(tmp_path):
    py = torch_python()
    if py is None:
        pytest.skip("no torch interpreter (set JAXSYNTH_TORCH_PYTHON)")
    config = load_config(str(REPO / "configs" / "stylegan2.py") + ":smoke")
    task = build_task(config)
    spec = twin_spec(config, 0.2)
    n, size = 4, spec["image_size"]
    keys = iter(jax.random.split(jax.random.key(0), 16))
    img_in = jax.random.uniform(next(keys), (n, size, size, 3)) * 2 - 1
    state = task.init(next(keys), {"image": img_in})
    flat, pert = {}, jax.random.key(1)
    for net, tag in (("generator", "G"), ("discriminator", "D")):
        params = traverse_util.flatten_dict(state[net].params, sep="/")
        for i, (k, v) in enumerate(params.items()):  # perturb everything; noise strength 0
            noise = 0.1 * jax.random.normal(jax.random.fold_in(pert, i), v.shape)
            params[k] = jnp.zeros_like(v) if k.endswith("noise_strength") else v + noise
            flat[f"{tag}/{k}"] = np.asarray(params[k])
        if tag == "G":
            gp = traverse_util.unflatten_dict(params, "/")
        else:
            dp = traverse_util.unflatten_dict(params, "/")
    g, d = task.generator, task.discriminator
    ws = jax.random.normal(next(keys), (n, task.num_ws, spec["w_dim"]))
    z = jax.random.normal(next(keys), (n, spec["z_dim"]))
    g_inv = ada.geometric_matrix(next(keys), n, size, jnp.float32(1.0), True, True)
    expect = {
        "img": g.apply({"params": gp}, ws, method=g.synthesize, rngs={"noise": next(keys)}),
        "w": g.apply({"params": gp}, z, None, method=g.map),
        "logits": d.apply({"params": dp}, img_in, None),
        "warped": ada.warp(img_in, g_inv),
    }
    np.savez(
        tmp_path / "in.npz",
        in_ws=np.asarray(ws),
        in_z=np.asarray(z),
        in_img=np.asarray(img_in),
        in_ginv=np.asarray(g_inv),
        **flat,
    )
    for fir in ("conv", "phase"):
        job = {**spec, "check": str(tmp_path / "in.npz"), "check_out": str(tmp_path / "out.npz")}
        job["fir"] = fir
        proc = subprocess.run(
            [py, str(REPO / "bench" / "torch_stylegan2.py"), json.dumps(job)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = np.load(tmp_path / "out.npz")
        n_g = sum(x.size for x in jax.tree.leaves(gp))
        n_d = sum(x.size for x in jax.tree.leaves(dp))
        assert (int(got["g_params"]), int(got["d_params"])) == (n_g, n_d)
        for k, v in expect.items():
            v = np.asarray(v)
            err = np.abs(got[k] - v).max() / (np.abs(v).max() + 1e-6)
            assert err < 1e-4, (fir, k, err)
