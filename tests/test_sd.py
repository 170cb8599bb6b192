"""Stable Diffusion sampling (`jaxsynth sd sample`) on a tiny random Flax SD pipeline.

The pipeline folder is built once per session (`jaxsynth.sd.tiny`) and loaded once; every
in-process sample shares one compiled sampler (same shapes: 32 px, 2 steps, 1 image per device).
One subprocess runs the real console entry point on 2 forced CPU devices and must reproduce the
in-process 1-device images bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxsynth import xla_flags
from jaxsynth.cli import main
from jaxsynth.sd import pipeline as sdp
from jaxsynth.sd.tiny import build_tiny_pipeline

# The CLI subprocess runs with jaxsynth's XLA flags; the in-process reference must use the same
# ones for a bitwise comparison (other XLA:CPU conv kernels round differently). They can only be
# set before jax initialises its backends, which another test module may already have done.
SAME_XLA_FLAGS_AS_CLI = not xla_flags._backends_initialised()
xla_flags.apply()

PROMPT = "the tumour"
NEG = "blurry"
SETTINGS = dict(prompt=PROMPT, negative_prompt=NEG, steps=2, guidance=7.5, size=32, out_size=16)
CLI_SETTINGS = [
    "--prompt", PROMPT, "--negative-prompt", NEG, "--steps", "2", "--guidance", "7.5",
    "--size", "32", "--out-size", "16", "--batch-per-device", "1", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny_sd", seed=0)


@pytest.fixture(scope="session")
def loaded(tiny_model):
    return sdp.load_pipeline(tiny_model, scheduler="ddim")


@pytest.fixture(scope="session")
def reference(loaded) -> dict:
    """Seed-0 images 0..3 from the in-process 1-device sampler (the shared reference)."""
    return {
        "seed0": sdp.sample_images(None, loaded=loaded, num=4, seed=0, progress=False, **SETTINGS)
    }


def _compile_counter():
    import jax

    events: list[str] = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    return events, lambda: jax.monitoring.unregister_event_duration_listener(listener)


def _read_pngs(folder: Path, n: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"sample_{i:05d}.png")) for i in range(n)])


def test_tiny_folder_is_a_flax_sd_pipeline(tiny_model):
    index = json.loads((tiny_model / "model_index.json").read_text())
    assert index["_class_name"] == "FlaxStableDiffusionPipeline"
    for f in ("unet/diffusion_flax_model.msgpack", "vae/diffusion_flax_model.msgpack",
              "text_encoder/flax_model.msgpack", "tokenizer/vocab.json",
              "scheduler/scheduler_config.json"):  # fmt: skip
        assert (tiny_model / f).is_file(), f
    assert sdp.check_model_folder(tiny_model) is False  # Flax weights: no conversion needed


def test_loads_a_folder_saved_with_pytorch_class_names(tiny_model, loaded, tmp_path):
    """SD v1.5's own model_index.json names PyTorch classes (and a safety checker / feature
    extractor we drop); the Flax classes must be picked and our scheduler swapped in."""
    from diffusers import FlaxDPMSolverMultistepScheduler

    real_style = _set_class(tiny_model, tmp_path / "v15_layout", "StableDiffusionPipeline")
    index = json.loads((real_style / "model_index.json").read_text())
    index.update(
        scheduler=["diffusers", "PNDMScheduler"],
        text_encoder=["transformers", "CLIPTextModel"],
        unet=["diffusers", "UNet2DConditionModel"],
        vae=["diffusers", "AutoencoderKL"],
        safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
        feature_extractor=["transformers", "CLIPImageProcessor"],
    )
    (real_style / "model_index.json").write_text(json.dumps(index))
    other = sdp.load_pipeline(real_style, scheduler="dpm", reuse=False)
    assert isinstance(other.pipe.scheduler, FlaxDPMSolverMultistepScheduler)
    assert other.pipe.safety_checker is None
    import jax

    for a, b in zip(jax.tree.leaves(other.params["unet"]), jax.tree.leaves(loaded.params["unet"])):
        assert a.shape[0] == 1  # leading device axis
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tokenizer_round_trips_ascii(loaded):
    tok = loaded.pipe.tokenizer
    ids = tok("the tumour, 2x")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.unk_token_id not in ids[1:-1]  # every character is in the vocabulary
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "thetumour,2x"


def test_latents_are_a_function_of_seed_and_index_only():
    shape = (4, 8, 8)
    batch = sdp.image_latents(7, np.arange(6), shape)
    singles = np.concatenate([sdp.image_latents(7, np.array([i]), shape) for i in range(6)])
    np.testing.assert_array_equal(batch, singles)  # no dependence on batch composition
    assert not np.array_equal(batch, sdp.image_latents(8, np.arange(6), shape))
    assert not np.array_equal(batch[0], batch[1])
    assert abs(batch.mean()) < 0.1 and abs(batch.std() - 1.0) < 0.1  # standard normal noise


def test_resize_is_antialiased():
    checker = ((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(checker[None, ..., None], 3, axis=-1)
    small = sdp.resize_images(img, 8)
    assert small.shape == (1, 8, 8, 3)
    # A 1-px checkerboard averages to mid-grey when antialiased (point sampling gives 0 or 255).
    assert np.all(np.abs(small[:, 2:-2, 2:-2].astype(int) - 128) < 8)
    flat = np.full((2, 32, 32, 3), 77, np.uint8)
    np.testing.assert_array_equal(sdp.resize_images(flat, 16), np.full((2, 16, 16, 3), 77))


def test_same_seed_same_images_and_sampler_compiled_once(loaded, reference):
    a = reference["seed0"]
    assert a.shape == (4, 16, 16, 3) and a.dtype == np.uint8
    assert a.std() > 1.0  # not a constant image
    assert not np.array_equal(a[0], a[1])  # each image has its own noise
    events, stop = _compile_counter()
    try:
        seen = []
        b = sdp.sample_images(
            None, loaded=loaded, num=3, seed=0, progress=False,
            on_batch=lambda idx, ims: seen.append((list(idx), len(events))), **SETTINGS,
        )  # fmt: skip
        c = sdp.sample_images(None, loaded=loaded, num=2, seed=1, progress=False, **SETTINGS)
    finally:
        stop()
    assert [s[0] for s in seen] == [[0], [1], [2]]
    assert events == []  # every batch, both runs: the compiled sampler was reused
    np.testing.assert_array_equal(b, a[:3])  # same seed -> same images (also a prefix of num=4)
    assert not np.array_equal(c, a[:2])  # another seed -> other images
    # The negative prompt and the guidance are really used: changing them changes the images.
    d = sdp.sample_images(None, loaded=loaded, num=1, seed=0, progress=False,
                          **{**SETTINGS, "negative_prompt": ""})  # fmt: skip
    assert not np.array_equal(d[0], a[0])


def test_cli_in_process_writes_pngs_and_sidecar(tiny_model, reference, tmp_path, capsys):
    out = tmp_path / "samples"
    args = ["sd", "sample", "--model", str(tiny_model), *CLI_SETTINGS, "--num", "3"]
    assert main([*args, "--seed", "0", "--out", str(out)]) == 0
    pngs = sorted(out.glob("sample_*.png"))
    assert [p.name for p in pngs] == [f"sample_{i:05d}.png" for i in range(3)]
    images = _read_pngs(out, 3)
    assert images.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(images, reference["seed0"][:3])
    np.testing.assert_array_equal(np.load(out / "samples.npz")["images"], images)
    meta = json.loads((out / "samples.json").read_text())
    assert meta["model_path"] == str(tiny_model.resolve())
    assert (meta["prompt"], meta["negative_prompt"], meta["seed"]) == (PROMPT, NEG, 0)
    assert (meta["steps"], meta["guidance"], meta["scheduler"]) == (2, 7.5, "ddim")
    assert (meta["size"], meta["out_size"], meta["num"], meta["num_devices"]) == (32, 16, 3, 1)
    assert [im["index"] for im in meta["images"]] == [0, 1, 2]
    assert meta["versions"]["jaxsynth"]
    assert "wrote 3 images" in capsys.readouterr().out


def test_cli_two_devices_subprocess_matches_one_device(tiny_model, reference, tmp_path):
    """A fresh process on 2 CPU devices (last batch padded) redraws the 1-device images."""
    out = tmp_path / "two"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    cmd = [sys.executable, "-m", "jaxsynth.cli", "sd", "sample", "--model", str(tiny_model),
           *CLI_SETTINGS[:-1], "--num", "3", "--seed", "0", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "img/s" in proc.stderr  # progress is reported
    meta = json.loads((out / "samples.json").read_text())
    assert meta["num_devices"] == 2
    two = _read_pngs(out, 3)
    if SAME_XLA_FLAGS_AS_CLI:
        np.testing.assert_array_equal(two, reference["seed0"][:3])
    else:  # same noise, other conv kernels in this process: at most 1/255 apart, rarely
        diff = np.abs(two.astype(int) - reference["seed0"][:3])
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_more_devices_than_images_is_an_error(tiny_model, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    cmd = [sys.executable, "-m", "jaxsynth.cli", "sd", "sample", "--model", str(tiny_model),
           *CLI_SETTINGS, "--num", "1", "--out", str(tmp_path / "x")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--num 1" in lines[0] and "2 local devices" in lines[0], lines
    assert not (tmp_path / "x").exists()


def _copy_without_weights(tiny_model: Path, dst: Path, torch_files: bool) -> Path:
    shutil.copytree(tiny_model, dst, ignore=shutil.ignore_patterns("*.msgpack"))
    if torch_files:
        for comp, name in (("unet", "diffusion_pytorch_model.bin"),
                           ("vae", "diffusion_pytorch_model.bin"),
                           ("text_encoder", "pytorch_model.bin")):  # fmt: skip
            (dst / comp / name).write_bytes(b"not a checkpoint: the header check fails first")
    return dst


def _set_class(tiny_model: Path, dst: Path, class_name: str) -> Path:
    shutil.copytree(tiny_model, dst)
    index = json.loads((dst / "model_index.json").read_text())
    (dst / "model_index.json").write_text(json.dumps({**index, "_class_name": class_name}))
    return dst


@pytest.mark.parametrize(
    "case, extra, expect",
    [
        ("missing", [], "folder not found"),
        ("torch_only", [], "diffusion_pytorch_model.bin: not a PyTorch checkpoint"),
        ("no_weights", [], "unet/ has neither Flax weights"),
        ("pytorch_class", [], "'StableDiffusion3Pipeline' is a PyTorch-only pipeline"),
        ("img2img_class", [], "not a text-to-image Stable Diffusion pipeline"),
        ("no_class", [], "no _class_name"),
        ("ok", ["--out-size", "0"], "--out-size 0"),
        ("ok", ["--size", "36"], "--size 36: must be a positive multiple of 8"),
        ("ok", ["--steps", "0"], "--steps 0"),
        ("ok", ["--seed", "-1"], "--seed -1"),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny_model, tmp_path, capsys, case, extra, expect):
    model = {
        "missing": lambda: tmp_path / "nope",
        "torch_only": lambda: _copy_without_weights(tiny_model, tmp_path / "pt", True),
        "no_weights": lambda: _copy_without_weights(tiny_model, tmp_path / "empty", False),
        "pytorch_class": lambda: _set_class(
            tiny_model, tmp_path / "sd3", "StableDiffusion3Pipeline"
        ),
        "img2img_class": lambda: _set_class(
            tiny_model, tmp_path / "i2i", "StableDiffusionImg2ImgPipeline"
        ),
        "no_class": lambda: _set_class(tiny_model, tmp_path / "nc", ""),
        "ok": lambda: tiny_model,
    }[case]()
    args = ["sd", "sample", "--model", str(model), *CLI_SETTINGS, "--num", "2", *extra]
    rc = main([*args, "--out", str(tmp_path / "out")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("jaxsynth: error:") and expect in err[0], err
    assert not (tmp_path / "out").exists()


def test_sd_arm_of_the_study_samples_filters_and_trains_classifiers(tiny_model, tmp_path):
    """`jaxsynth run --config.sd.model_path=DIR`: SD joins the study as a generator arm."""
    from jaxsynth.config import load_config
    from jaxsynth.study.rare_tumour import build_stages, run_stages

    cfg = load_config(
        "rare_tumour:smoke",
        [
            "--config.generators=()",
            f"--config.sd.model_path={tiny_model}",
            "--config.sd.size=32",
            "--config.sd.steps=2",
            "--config.sd.num=12",
            "--config.classifier.seeds=(0,)",
            "--config.classifier.synthetic_only_arms=false",
            "--config.study.generator_seeds=(0,)",
        ],
    )
    results = run_stages(build_stages(cfg), cfg, tmp_path)
    assert results["sample_sd_g0"]["num"] == 12
    (sample_dir,) = tmp_path.glob("stages/sample_sd_g0-*")
    with np.load(sample_dir / "synthetic.npz") as z:
        assert z["images"].shape == (12, 16, 16, 3)  # resized to the study's image size
    synth = results["synth_sd_g0"]
    assert synth["generated"] == 12 and 0 <= synth["kept"] <= 12
    family = results["arms_sd_g0"]
    arm = [r for r in family["runs"] if r["arm"] == "sd"]
    assert "sd" in family["skipped"] or arm[0]["counts"]["synthetic"] == synth["kept"]
    report = json.loads((tmp_path / "results.json").read_text())
    assert "sd" in report["generators"]
