"""Stable Diffusion fine-tuning (full and LoRA) on the engine, on the micro SD fixture.

The SD stand-in is `tests/fixtures/sd_pt/pipeline` (random weights, PyTorch safetensors read
without torch): it loads in seconds, so no pipeline is built here. 32-px tiles -> 4x4 latents.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fast_jax import CACHE, FAST_COMPILE, configure  # noqa: E402

configure()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.errors import UserError  # noqa: E402
from jaxsynth.models import lora as lora_lib  # noqa: E402
from jaxsynth.sd import finetune as ft  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PIPELINE = REPO / "tests" / "fixtures" / "sd_pt" / "pipeline"


def smoke_config(*overrides: str, variant: str = "smoke"):
    return load_config(
        str(REPO / "configs" / "sd_finetune.py") + ":" + variant,
        [f"--config.sd_ft.model_path={PIPELINE}", *overrides],
    )


def tiles(n: int = 8, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), np.uint8), np.arange(n, dtype=np.int32) % 2


@pytest.fixture(scope="module")
def sd():
    modules, params, _ = ft.load_sd(PIPELINE)
    f32 = jax.tree.map(lambda a: np.asarray(a, np.float32), params["unet"])
    return modules["unet"], f32


def test_lora_zero_b_is_identity_and_merges_exactly(sd):
    unet, p = sd
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 4, 4, 4)), jnp.float32)
    t = jnp.asarray([10, 700])
    ctx = jnp.asarray(rng.normal(size=(2, 16, 32)), jnp.float32)
    run = jax.jit(lambda params: unet.apply({"params": params}, x, t, ctx).sample)
    run_lora = jax.jit(
        lambda params, lr, s: (
            lora_lib.apply_with_lora(unet, {"params": params}, lr, s, x, t, ctx).sample
        )
    )
    targets = lora_lib.lora_targets(p)
    assert len(targets) == 32  # 4 transformer blocks x (self + cross attention) x q, k, v, out
    assert all(k.split("/")[-1] in lora_lib.ATTENTION_PROJECTIONS for k in targets)
    fresh = lora_lib.init_lora(jax.random.PRNGKey(1), targets, rank=2)
    base = np.asarray(run(p))
    np.testing.assert_array_equal(np.asarray(run_lora(p, fresh, 1.0)), base)  # B = 0: no change
    merged0 = lora_lib.merge_lora(p, fresh, 1.0)
    for a, b in zip(jax.tree.leaves(merged0), jax.tree.leaves(p), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    # A trained adapter: the adapter path and the merged weights are the same function.
    trained = jax.tree.map(lambda a: a + 0.05 * rng.normal(size=a.shape).astype(np.float32), fresh)
    adapted = np.asarray(run_lora(p, trained, 0.5))
    merged = np.asarray(run(lora_lib.merge_lora(p, trained, 0.5)))
    assert np.abs(adapted - base).max() > 1e-2  # the adapters are really applied
    np.testing.assert_allclose(merged, adapted, rtol=1e-4, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_one_step_changes_only_the_trainable_params(mode):
    task = ft.make_task(smoke_config(f"--config.sd_ft.mode={mode}"))
    images, labels = tiles()
    task.prepare(images, labels)
    assert task.cache["mean"].shape == (8 * 8, 4, 4, 4)  # 8 flips/rotations of 8 tiles
    batch = {"image": jnp.zeros((8, 32, 32, 3)), "label": jnp.zeros((8,), jnp.int32)}
    state = jax.jit(task.init)(jax.random.PRNGKey(0), batch)
    before = jax.device_get(state)
    # The memory estimate printed before a run is the size of the state it then builds.
    rows = dict(ft.memory_estimate(task, num_cached=8))
    nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))  # noqa: E731
    frozen_row = next(v for k, v in rows.items() if k.startswith("frozen"))
    assert rows["trainable params (float32)"] == nbytes(before["unet"].params)
    assert rows["EMA copy"] == nbytes(before["unet"].ema_params)
    assert 0 <= nbytes(before["unet"].opt_state) - rows["Adam moments"] <= 16  # + step counts
    assert frozen_row == nbytes(before["frozen"].params)
    assert rows["latent cache"] == sum(v.nbytes for k, v in task.cache.items() if k != "label")
    new, metrics = jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(1))
    new = jax.device_get(new)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    for a, b in zip(jax.tree.leaves(new["frozen"]), jax.tree.leaves(before["frozen"]), strict=True):
        np.testing.assert_array_equal(a, b)  # VAE, text encoder (and LoRA's base U-Net)
    old_t, new_t = before["unet"].params, new["unet"].params
    changed = [
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old_t), jax.tree.leaves(new_t))
    ]
    if mode == "lora":
        assert set(old_t) == {"lora"} and set(before["frozen"].params) == {
            "vae",
            "text_encoder",
            "unet",
        }
        ups = [np.abs(v["up"]).max() for v in new_t["lora"].values()]
        assert min(ups) > 0  # every adapter's B moved off zero
    else:
        assert set(old_t) == {"unet"} and set(before["frozen"].params) == {"vae", "text_encoder"}
    assert np.mean(changed) > 0.9


def test_bad_config_is_a_one_line_error():
    with pytest.raises(UserError, match="sd_ft.prompts has 1 prompt"):
        ft.make_task(smoke_config("--config.sd_ft.prompts=('only one',)"))
    with pytest.raises(UserError, match="sd_ft.model_path is empty"):
        ft.make_task(load_config(str(REPO / "configs" / "sd_finetune.py") + ":smoke"))
    with pytest.raises(UserError, match="sd_ft.mode='half'"):
        ft.make_task(smoke_config("--config.sd_ft.mode=half"))


def cli_env() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + FAST_COMPILE).strip()
    env["JAX_COMPILATION_CACHE_DIR"] = CACHE
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PLATFORMS"] = "cpu"
    return env


# `jaxsynth ...` with a `Pause` hook after every dispatch, so a kill lands mid-run
PAUSED_CLI = """
import functools, sys
import jaxsynth.train.loop as loop
from jaxsynth.train.hooks import Pause
loop.train = functools.partial(loop.train, hooks=[Pause(float(sys.argv[1]))])
from jaxsynth.cli import main
sys.exit(main(sys.argv[2:]))
"""


def start_cli(workdir: Path, *extra: str, pause: float = 0.0) -> subprocess.Popen:
    args = ["sd", "finetune", "--workdir", str(workdir),
            "--config", str(REPO / "configs" / "sd_finetune.py") + ":smoke",
            f"--config.sd_ft.model_path={PIPELINE}", "--config.num_steps=8",
            "--config.checkpoint_every=2", *extra]  # fmt: skip
    run = ["-c", PAUSED_CLI, str(pause)] if pause else ["-m", "jaxsynth.cli"]
    cmd = [sys.executable, *run, *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(), cwd=REPO
    )


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    return out


def final_state(workdir: Path) -> list[np.ndarray]:
    from jaxsynth.train.checkpoint import load_trained

    _, state, _, step = load_trained(workdir)
    assert step == 8
    return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.mark.manual
def test_cli_kill9_then_resume_is_bitwise_identical_and_lora_samples(tmp_path, capsys):
    straight = finish(start_cli(tmp_path / "straight"))
    assert "memory estimate (per device):" in straight and "trainable params" in straight
    export = tmp_path / "straight" / "export"
    meta = json.loads((export / "lora.json").read_text())
    assert (meta["rank"], meta["alpha"]) == (2, 2.0)

    killed = tmp_path / "killed"
    victim = start_cli(killed, pause=0.5)
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "4").is_dir():
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    resumed = finish(start_cli(killed))
    assert "resuming from step" in resumed
    a, b = final_state(tmp_path / "straight"), final_state(killed)
    assert len(a) == len(b) > 100
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), "resumed run differs"
    assert (export / "lora.msgpack").read_bytes() == (killed / "export/lora.msgpack").read_bytes()

    # `sd sample --lora`: the merged adapters change the images of the same seed.
    from jaxsynth.cli import main

    common = ["sd", "sample", "--model", str(PIPELINE), "--prompt", "H&E", "--num", "1",
              "--steps", "2", "--size", "16", "--out-size", "16", "--quiet"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "base")]) == 0
    assert main([*common, "--lora", str(export), "--out", str(tmp_path / "lora")]) == 0
    base = np.load(tmp_path / "base" / "samples.npz")["images"]
    tuned = np.load(tmp_path / "lora" / "samples.npz")["images"]
    assert base.shape == tuned.shape == (1, 16, 16, 3) and not np.array_equal(base, tuned)
    assert json.loads((tmp_path / "lora" / "samples.json").read_text())["lora"] == str(export)


@pytest.mark.manual
def test_finetuning_on_tumour_tiles_lowers_heldout_denoising_loss(tmp_path):
    """The functional check of issue 18 on the phantom: fine-tune (full U-Net) on the training
    split's tumour tiles; the eps-MSE on held-out tumour tiles (never trained on) must drop, and
    end below 1.0, the loss of predicting zero noise. Not a quality claim: the stand-in SD is
    random, so its samples cannot be scored by a tissue classifier (docs/sd_finetune.md)."""
    from jaxsynth.commands.train import training_data
    from jaxsynth.data.split import load_or_build_split
    from jaxsynth.train.loop import train

    cfg = smoke_config(
        "--config.num_steps=120", "--config.checkpoint_every=120", variant="smoke,tumour,full"
    )
    task = ft.make_task(cfg)
    data = training_data(cfg, tmp_path)
    split = load_or_build_split(cfg, tmp_path)
    tumour = split.label_of("tumour")
    assert set(np.unique(data.arrays["label"])) == {tumour}
    held = np.concatenate([s.of_classes([tumour]).images for s in (split.val, split.test)])
    x = jnp.asarray(held.astype(np.float32) / 127.5 - 1.0)
    y = jnp.full((len(held),), tumour, jnp.int32)
    task.prepare(data.arrays["image"], data.arrays["label"])
    loss = jax.jit(lambda st: task.heldout_loss(st, x, y))
    batch = {"image": jnp.zeros((8, 32, 32, 3)), "label": jnp.zeros((8,), jnp.int32)}
    before = float(loss(jax.jit(task.init)(jax.random.PRNGKey(0), batch)))
    after = float(loss(train(cfg, tmp_path / "run", data, task=task).state))
    print(f"held-out tumour eps-MSE: untuned {before:.4f} -> fine-tuned {after:.4f}")
    assert after < 0.8 * before and after < 1.0


@pytest.mark.parametrize("flag, needed", [("--lora", "lora.json"), ("--unet", "unet/diffusion")])
def test_sample_with_a_missing_export_is_one_line_exit_2(tmp_path, capsys, flag, needed):
    from jaxsynth.cli import main

    args = ["sd", "sample", "--model", str(PIPELINE), "--prompt", "x", "--num", "1",
            "--out", str(tmp_path / "out"), flag, str(tmp_path / "nope")]  # fmt: skip
    assert main(args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("jaxsynth: error")]
    assert len(err) == 1 and f"{flag} {tmp_path / 'nope'}: no {needed}" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.manual
def test_jaxsynth_train_without_the_cache_encodes_each_batch(tmp_path):
    """`jaxsynth train --config configs/sd_finetune.py` (no `prepare`): the steps encode the
    engine's image batch with the frozen VAE instead of reading a cache."""
    from jaxsynth.cli import main

    args = ["train", "--config", str(REPO / "configs" / "sd_finetune.py") + ":smoke",
            "--workdir", str(tmp_path), f"--config.sd_ft.model_path={PIPELINE}",
            "--config.num_steps=2", "--config.checkpoint_every=2"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(np.isfinite(v) for v in losses)


@pytest.mark.slow  # 71 s on the 2-core CPU (LoRA step compile, classifier, two samplers)
def test_study_sd_ft_generator_trains_on_training_tumour_tiles_only_and_samples(tmp_path):
    """The study's `sd_ft` generator (`--config.generators=('sd_ft',)` + `sd.model_path`): LoRA
    fine-tuning on the training split's tumour tiles only, then `synthetic.num` tiles at the
    study's size through the memorisation filter; the adapters change the images of a seed."""
    from jaxsynth.sd.pipeline import sample_images
    from jaxsynth.study.common import load_stage_split
    from jaxsynth.study.generators import SD_FT_INFO, enabled_generators
    from jaxsynth.study.rare_tumour import foundation_stages, run_stages

    cfg = load_config(
        str(REPO / "configs" / "rare_tumour.py") + ":smoke",
        [
            "--config.generators=('sd_ft',)",
            f"--config.sd.model_path={PIPELINE}",
            "--config.sd.size=16",
            "--config.sd.steps=2",
            "--config.sd.num=2",
            "--config.synthetic.num=6",
            "--config.gen.sd_ft.num_steps=4",
            "--config.gen.sd_ft.sampler.steps=2",
            "--config.classifier.seeds=(0,)",
            "--config.study.generator_seeds=(0,)",
        ],
    )
    assert enabled_generators(cfg) == ["sd_ft", "sd"]  # both SD arms, side by side in the report
    results = run_stages(foundation_stages(cfg), cfg, tmp_path)
    (split_dir,) = tmp_path.glob("stages/split-*")
    split = load_stage_split(split_dir)
    tumour = split.label_of("tumour")
    train_ids = split.train.of_classes([tumour]).ids
    (gen_dir,) = tmp_path.glob("stages/gen_sd_ft_g0-*")
    info = json.loads((gen_dir / SD_FT_INFO).read_text())
    assert info["train_ids"] == list(train_ids) and len(train_ids) == 24
    assert not set(info["train_ids"]) & set(split.val.ids + split.test.ids)
    trained = results["gen_sd_ft_g0"]
    assert trained["train_images"] == 24 and trained["cached_latents"] == 24 * 8
    assert trained["steps"] == 4 and trained["mode"] == "lora"
    assert trained["prompt"] == "H&E histopathology tile, metastatic tumour"
    assert (gen_dir / "export" / "lora.json").is_file()
    (sample_dir,) = tmp_path.glob("stages/sample_sd_ft_g0-*")
    with np.load(sample_dir / "synthetic.npz") as z:
        tuned = z["images"]
    assert tuned.shape == (6, 16, 16, 3) and tuned.dtype == np.uint8
    synth = results["synth_sd_ft_g0"]
    assert synth["generated"] == 6 and 0 <= synth["kept"] <= 6
    base = sample_images(
        PIPELINE, prompt=trained["prompt"], num=6, seed=cfg.seed, steps=2, guidance=7.5,
        size=16, out_size=16, progress=False,
    )  # fmt: skip
    assert not np.array_equal(base, tuned)
