"""bench/run_all.py: the summary arithmetic (JAX/PyTorch, MFU, loader/training) and skipping.

The benchmark JSONs here are small hand-written files in each script's real output format; the
derived numbers are checked against the formulas computed independently in the test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all_under_test"] = module
    spec.loader.exec_module(module)
    return module


def write(d: Path, name: str, obj: dict) -> None:
    (d / f"{name}.json").write_text(json.dumps(obj))


def fake_results(d: Path) -> None:
    write(d, "train_bench", {"rows": [
        {"model": "dcgan", "image_size": 64, "images_per_step": 64, "impl": "phase",
         "jax": {"steps_per_s": 0.5, "flops_per_step": 126e9},
         "torch": {"eager": {"steps_per_s": 0.25}, "compile": {"error": "boom"}}},
        {"model": "dcgan", "image_size": 64, "images_per_step": 64, "impl": "lax",
         "jax": {"steps_per_s": 0.01, "flops_per_step": 126e9}},
        {"model": "cgan", "image_size": 64, "images_per_step": 64, "impl": "phase",
         "jax_steps_per_s": 0.25, "model_gflop_per_step": 100.0,
         "torch_eager_steps_per_s": 0.5, "torch_compile_steps_per_s": 0.2},
    ]})  # fmt: skip
    write(d, "data_bench", {"rows": [
        {"size": 64, "workers": 0, "grain_img_s": 3200.0, "numpy_loop_img_s": 1.0},
        {"size": 128, "workers": 0, "grain_img_s": 300.0, "numpy_loop_img_s": 1.0},
    ]})  # fmt: skip
    write(d, "fid_bench", {"jaxsynth_flax_img_per_s": 3.0, "pytorch_fid_img_per_s": 1.5,
                           "ratio_flax_over_torch": 2.0})  # fmt: skip


def test_collect_only_summary(run_all, tmp_path):
    fake_results(tmp_path)
    out, md = tmp_path / "results.json", tmp_path / "results.md"
    argv = ["--collect-only", "--results-dir", str(tmp_path), "--out", str(out), "--md", str(md)]
    assert run_all.main([*argv, "--peak-n", "128", "--peak-reps", "2"]) == 0
    result = json.loads(out.read_text())
    peak = result["matmul_peak"]["gflops"]
    assert peak > 0 and result["matmul_peak"]["n"] == 128
    s = result["summary"]
    # the non-default ConvT implementation row is not a model row; flat-key rows are read too
    dcgan, cgan = s["training"]
    assert cgan["jax_over_torch_eager"] == pytest.approx(0.5)
    assert cgan["jax_over_torch_compile"] == pytest.approx(1.25)
    assert cgan["mfu_pct"] == pytest.approx(100 * 100 * 0.25 / peak)
    assert dcgan["jax_img_per_s"] == pytest.approx(32.0)
    assert dcgan["torch_eager_img_per_s"] == pytest.approx(16.0)
    assert dcgan["jax_over_torch_eager"] == pytest.approx(2.0)
    assert dcgan["torch_compile_img_per_s"] is None
    assert dcgan["mfu_pct"] == pytest.approx(100 * 126 * 0.5 / peak)
    assert s["best_mfu_pct"] == pytest.approx(max(dcgan["mfu_pct"], cgan["mfu_pct"]))
    loader = {r["image_size"]: r for r in s["loader"]}
    assert loader[64]["loader_over_training"] == pytest.approx(100.0)  # 3200 / 32
    assert loader[128]["loader_over_training"] is None  # no model trained at 128 px
    (fid,) = s["sampling_and_features"]
    assert fid["jax_over_torch"] == pytest.approx(2.0)
    assert s["runs"]["ddpm_bench"]["status"] == "missing"
    text = md.read_text()
    assert "| dcgan | 64 | 64 | 32.0 | 16.0 | - | 2.00× ✓ | 126.0 |" in text
    assert "| cgan | 64 | 64 | 16.0 | 32.0 | 12.8 | 0.50× ✗ | 100.0 |" in text
    assert "| 64 | 0 | 3200 | 32.0 | 100.0× ✓ |" in text
    assert "GFLOP/s" in text and "Load average" in text


def test_absent_script_is_skipped_with_a_reason(run_all, monkeypatch, tmp_path):
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    monkeypatch.setattr(run_all, "RESULTS", tmp_path / "results")
    run = run_all.run_benchmark("sd_bench", quick=True, timeout=10)
    assert run == {"status": "skipped", "reason": "bench/sd_bench.py is not in the tree"}


def test_failed_script_is_reported_not_hidden(run_all, monkeypatch, tmp_path):
    (tmp_path / "data_bench.py").write_text("import sys; print('broken'); sys.exit(3)\n")
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    monkeypatch.setattr(run_all, "RESULTS", tmp_path / "results")
    run = run_all.run_benchmark("data_bench", quick=False, timeout=60)
    assert run["status"] == "failed" and run["exit_code"] == 3
    assert "broken" in Path(run["log"]).read_text()
