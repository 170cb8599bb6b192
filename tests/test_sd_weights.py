"""Torch-free loading of PyTorch SD weights (`jaxsynth.sd.weights`).

The fixture (`tests/fixtures/sd_pt/`, made by its committed `make_fixture.py` with torch) is a
micro SD pipeline saved by diffusers' PyTorch classes (float16 U-Net safetensors, float32 VAE and
text encoder safetensors, and `.bin` copies of the latter two) with, for every Flax parameter, the
digest of what diffusers' / transformers' own `from_pt=True` conversion produced. Every load here
runs with `import torch` made impossible.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from jaxsynth.errors import UserError
from jaxsynth.sd import weights

FIXTURE = Path(__file__).parent / "fixtures" / "sd_pt"
PIPELINE = FIXTURE / "pipeline"
REFERENCE = json.loads((FIXTURE / "from_pt.json").read_text())


@pytest.fixture
def no_torch(monkeypatch):
    """`import torch` raises ImportError for the duration of the test."""
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)


def digests(params) -> dict:
    out = {}
    for k, v in sorted(flatten_dict(params).items()):
        a = np.ascontiguousarray(np.asarray(v))
        out["/".join(k)] = [list(a.shape), str(a.dtype), hashlib.sha256(a.tobytes()).hexdigest()]
    return out


@pytest.fixture(scope="module")
def modules():
    return weights.build_modules(PIPELINE)


def test_safetensors_folder_equals_from_pt_without_torch(no_torch, modules):
    _, params = weights.load_sd_params(PIPELINE, modules)
    for comp in ("unet", "vae", "text_encoder"):
        got = digests(params[comp])
        assert got == REFERENCE[comp], comp  # same paths, shapes, dtypes, bytes
    assert digests(params["unet"])["conv_in/kernel"][1] == "float16"  # file dtype is kept
    assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]


def test_bin_files_through_the_restricted_unpickler(no_torch, modules, tmp_path):
    folder = shutil.copytree(PIPELINE, tmp_path / "sd")
    for comp, st in (("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
        (folder / comp / f"{st}.safetensors").unlink()
        for f in (FIXTURE / "bin" / comp).iterdir():
            shutil.copy(f, folder / comp / f.name)
    assert weights.weight_file(folder, "vae").suffix == ".bin"
    _, params = weights.load_sd_params(folder, modules)
    for comp in ("vae", "text_encoder"):
        assert digests(params[comp]) == REFERENCE[comp], comp


def test_safetensors_reader_matches_header_and_bfloat16():
    import ml_dtypes

    tensors = weights.read_safetensors(PIPELINE / "vae" / "diffusion_pytorch_model.safetensors")
    assert tensors["encoder.conv_in.weight"].shape == (8, 3, 3, 3)
    # a hand-written bf16 file: 1.5 and -2 are exact in bfloat16
    raw = np.array([1.5, -2.0], ml_dtypes.bfloat16).tobytes()
    header = json.dumps({"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "bf16.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + raw)
    x = weights.read_safetensors(path)["x"]
    assert x.dtype == ml_dtypes.bfloat16 and x.astype(np.float32).tolist() == [1.5, -2.0]


def _targets():
    import jax

    return {"lin": {"kernel": jax.ShapeDtypeStruct((3, 2), np.float32)},
            "norm": {"scale": jax.ShapeDtypeStruct((2,), np.float32)}}  # fmt: skip


def test_mapping_layouts_and_errors():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)  # torch Linear: (out, in)
    sd = {"lin.weight": w, "norm.weight": np.ones(2, np.float32)}
    out = weights.pt_to_flax(sd, _targets(), "diffusers", "f.safetensors")
    np.testing.assert_array_equal(out["lin"]["kernel"], w.T)
    with pytest.raises(UserError, match=r"f.safetensors: lin.weight has shape \(3, 2\)"):
        weights.pt_to_flax({**sd, "lin.weight": w.T}, _targets(), "diffusers", "f.safetensors")
    with pytest.raises(UserError, match="match no parameter of the model, e.g. extra.weight"):
        weights.pt_to_flax({**sd, "extra.weight": w}, _targets(), "diffusers", "f.safetensors")
    with pytest.raises(UserError, match="1 parameter\\(s\\) missing, e.g. norm/scale"):
        weights.pt_to_flax({"lin.weight": w}, _targets(), "diffusers", "f.safetensors")


def test_truncated_or_fake_files_are_one_line_errors(tmp_path):
    src = PIPELINE / "vae" / "diffusion_pytorch_model.safetensors"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(UserError, match="cut.safetensors: tensor .* wrong byte range"):
        weights.read_safetensors(cut)
    fake = tmp_path / "x.bin"
    fake.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="x.bin: not a PyTorch checkpoint"):
        weights.check_weights_header(fake)
    bad = tmp_path / "b.safetensors"
    bad.write_bytes(b"\xff" * 16)
    with pytest.raises(UserError, match="b.safetensors: not a safetensors file"):
        weights.check_weights_header(bad)


@pytest.mark.slow
def test_pipeline_samples_from_a_pytorch_folder_without_torch(no_torch):
    from jaxsynth.sd import pipeline as sdp

    assert sdp.check_model_folder(PIPELINE) is True  # PyTorch files: mapped, no torch needed
    loaded = sdp.load_pipeline(PIPELINE, scheduler="ddim", reuse=False)
    images = sdp.sample_images(
        None, loaded=loaded, prompt="the tumour", num=1, seed=0, steps=2, size=16,
        out_size=16, progress=False,
    )  # fmt: skip
    assert images.shape == (1, 16, 16, 3) and images.dtype == np.uint8
    assert images.std() > 0  # not a constant image
