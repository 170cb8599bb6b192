"""The Flax ViT + torch-free loader vs the PyTorch reference (fixtures/vit/make_fixture.py):
transformers ViTModel / Dinov2Model / Dinov2WithRegistersModel and timm VisionTransformer with
random weights, tokens equal to < 1e-4 relative; plus the one-line errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxsynth.errors import UserError
from jaxsynth.eval.extractors import VitExtractor, parse_extractor
from jaxsynth.eval.vit_weights import load_vit, read_safetensors
from jaxsynth.models.vit import VisionTransformer

FIX = Path(__file__).parent / "fixtures" / "vit"
CASES = {
    "hf_vit": "hf",
    "hf_dinov2": "hf",
    "hf_dinov2_reg": "hf",
    "timm_swiglu": "timm",
    "timm_gelu": "timm",
}


@pytest.fixture(scope="module")
def expected():
    with np.load(FIX / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("name", list(CASES))
def test_tokens_match_pytorch(name, expected):
    x = expected[f"{name}_input"]
    loaded = load_vit(FIX / name, CASES[name], input_size=x.shape[1])
    tokens = jax.jit(VisionTransformer(loaded.spec).apply)({"params": loaded.params}, x)
    ref = expected[f"{name}_tokens"]
    assert tokens.shape == ref.shape
    assert _rel(tokens, ref) < 1e-4


@pytest.mark.parametrize("name,pool", [("hf_vit", "cls"), ("timm_swiglu", "mean")])
def test_extractor_from_uint8_matches_reference_pipeline(name, pool, expected):
    """Preprocessing (HF image processor / timm pretrained_cfg mean-std) + pooling end to end."""
    ext = VitExtractor(FIX / name, CASES[name], pool=pool, batch_size=2)
    feats = ext(expected[f"{name}_images"])
    ref = expected[f"{name}_tokens"]
    n_reg = ext.loaded.spec.num_registers
    ref = ref[:, 0] if pool == "cls" else ref[:, 1 + n_reg :].mean(axis=1)
    assert feats.shape == (3, 32) and feats.dtype == np.float64
    assert _rel(feats, ref) < 1e-4
    assert ext.id.startswith(f"{CASES[name]}-vit:") and ext.loaded.weights_sha256[:16] in ext.id


def test_safetensors_reader_matches_library():
    from safetensors.numpy import load_file

    ours = read_safetensors(FIX / "hf_vit" / "model.safetensors")
    ref = load_file(str(FIX / "hf_vit" / "model.safetensors"))
    assert sorted(ours) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k])


def test_safetensors_bf16_and_bad_header(tmp_path):
    import ml_dtypes

    vals = np.array([[1.5, -2.25], [3e-3, 7.0]], np.float32).astype(ml_dtypes.bfloat16)
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}})
    raw = len(header).to_bytes(8, "little") + header.encode() + vals.tobytes()
    (tmp_path / "a.safetensors").write_bytes(raw)
    got = read_safetensors(tmp_path / "a.safetensors")["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, vals.astype(np.float32))
    (tmp_path / "b.safetensors").write_bytes(b"\x05" + b"\0" * 7 + b"nope!")
    with pytest.raises(UserError, match="b.safetensors: not a safetensors file"):
        read_safetensors(tmp_path / "b.safetensors")


def test_loads_with_torch_blocked():
    """Both file formats load in a process where `import torch` fails."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from jaxsynth.eval.vit_weights import load_vit\n"
        f"for n, l in {CASES!r}.items():\n"
        f"    load_vit({str(FIX)!r} + '/' + n, l)\n"
        "assert sys.modules['torch'] is None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def _one_line_error(fn, *must_contain):
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for s in must_contain:
        assert s in msg, msg
    return msg


def test_errors_name_the_file(tmp_path):
    # missing folder / weights file
    _one_line_error(lambda: parse_extractor(f"hf-vit:{tmp_path}/nope"), "nope", "no such")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "vit"}))
    _one_line_error(lambda: load_vit(empty, "hf"), "empty", "no weights file")
    _one_line_error(lambda: parse_extractor("clip:x"), "unknown kind")
    # unknown layout: a timm folder read as HF, an HF config naming another model
    _one_line_error(lambda: load_vit(FIX / "timm_swiglu", "hf"), "config.json", "unknown layout")
    swin = tmp_path / "swin"
    shutil.copytree(FIX / "hf_vit", swin)
    cfg = json.loads((swin / "config.json").read_text())
    (swin / "config.json").write_text(json.dumps({**cfg, "model_type": "swin"}))
    _one_line_error(lambda: load_vit(swin, "hf"), "swin/config.json", "unknown layout")
    # wrong shapes: a head count that does not divide the width; a truncated MLP
    bad = tmp_path / "bad_heads"
    shutil.copytree(FIX / "timm_swiglu", bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_args"]["num_heads"] = 5
    (bad / "config.json").write_text(json.dumps(cfg))
    _one_line_error(lambda: load_vit(bad, "timm"), "model.safetensors", "wrong shapes")
    # a corrupt weights file
    junk = tmp_path / "junk"
    shutil.copytree(FIX / "timm_gelu", junk)
    (junk / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    _one_line_error(lambda: load_vit(junk, "timm"), "pytorch_model.bin", "cannot read")
