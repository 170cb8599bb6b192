"""`jaxsynth eval` end to end on folders of PNGs, with corrupt files and planted copies."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from jaxsynth import cli
from jaxsynth.eval import image_metrics

FIX = Path(__file__).parent / "fixtures" / "fid"
sys.path.insert(0, str(FIX))
import seeded_weights  # noqa: E402


def _write(folder: Path, images, prefix: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, im in enumerate(images):
        name = f"{prefix}{i:03d}.png"
        Image.fromarray(im).save(folder / name)
        names.append(name)
    return names


def _run(argv, capsys):
    rc = cli.main(["eval", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_eval_without_weights_flags_copies_and_skips_corrupt(tmp_path, capsys):
    train = seeded_weights.images(32, 24, seed=20)
    real = seeded_weights.images(32, 80, seed=21)
    fresh = seeded_weights.images(32, 10, seed=22)
    rng = np.random.default_rng(0)
    near = np.clip(train[7] + rng.normal(0, 2, train[7].shape), 0, 255).astype(np.uint8)
    fake = np.concatenate([fresh, train[[2]], near[None]])
    _write(tmp_path / "train", train, "t")
    _write(tmp_path / "real", real, "r")
    names = _write(tmp_path / "fake", fake, "f")
    (tmp_path / "fake" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (tmp_path / "fake" / "zz_empty.png").write_bytes(b"")
    out_json = tmp_path / "out" / "metrics.json"
    rc, stdout, stderr = _run(
        [
            "--real",
            str(tmp_path / "real"),
            "--fake",
            str(tmp_path / "fake"),
            "--train",
            str(tmp_path / "train"),
            "--json",
            str(out_json),
            "--kid-subset-size",
            "8",
            "--kid-subsets",
            "10",
            "--grid",
            str(tmp_path / "pairs.png"),
        ],
        capsys,
    )
    assert rc == 0
    res = json.loads(stdout)
    assert json.loads(out_json.read_text()) == res
    assert "inception-weights" in stderr and len(stderr.strip().splitlines()) == 1
    for key in (
        "fid",
        "kid",
        "ssim",
        "psnr",
        "precision",
        "recall",
        "density",
        "coverage",
        "memorization",
        "skipped",
        "feature_extractor",
    ):
        assert key in res, key
    assert res["fid"] is None and res["feature_extractor"].startswith("pixels16")
    assert sorted(s["file"] for s in res["skipped"]) == ["zz_broken.png", "zz_empty.png"]
    assert res["counts"] == {"real": 80, "fake": 12, "train": 24}
    mem = res["memorization"]
    assert {names[10], names[11]} <= set(mem["flagged"])  # the exact and the near copy
    assert len(set(mem["flagged"]) & set(names[:10])) <= 1
    assert mem["flagged_fraction"] == pytest.approx(len(mem["flagged"]) / 12)
    assert Path(mem["grid"]).is_file()
    # The JSON numbers are the library's on the same images.
    ref = image_metrics.ssim_to_set(fake, real)
    assert res["ssim"]["mean"] == pytest.approx(ref["mean"], abs=1e-6)
    assert res["ssim"]["max"] == pytest.approx(ref["max"], abs=1e-6)
    assert 0 <= res["precision"] <= 1 and 0 <= res["coverage"] <= 1


def test_eval_with_inception_weights_fid_zero_for_same_images(tmp_path, capsys):
    """Weights given: FID uses the Inception port. A copy of the real folder (plus a corrupt
    file, skipped) must give FID ~ 0. The `.pth` is a stand-in whose converted cache entry is
    pre-seeded with the fixture's seeded weights (the converter itself is tested elsewhere)."""
    real = seeded_weights.images(32, 5, seed=30)
    _write(tmp_path / "real", real, "r")
    shutil.copytree(tmp_path / "real", tmp_path / "fake")
    (tmp_path / "fake" / "bad.png").write_bytes(b"not an image at all")
    pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    pth.write_bytes(b"stand-in for the real weights file")
    cache = tmp_path / "cache"
    cache.mkdir()
    variables = seeded_weights.flax_inception_variables()
    flat = {
        "/".join(k.key for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    }
    digest = hashlib.sha256(pth.read_bytes()).hexdigest()[:16]
    np.savez(cache / f"fid_inception_{digest}.npz", **flat)
    rc, stdout, stderr = _run(
        [
            "--real",
            str(tmp_path / "real"),
            "--fake",
            str(tmp_path / "fake"),
            "--metrics",
            "fid,kid",
            "--inception-weights",
            str(pth),
            "--cache-dir",
            str(cache),
            "--batch-size",
            "5",
            "--kid-subset-size",
            "5",
            "--kid-subsets",
            "3",
        ],
        capsys,
    )
    assert rc == 0, stderr
    res = json.loads(stdout)
    assert res["feature_extractor"].startswith("inception-pool3")
    assert res["fid"] == pytest.approx(0.0, abs=1e-3)
    assert res["skipped"] == [
        {"set": "fake", "file": "bad.png", "reason": res["skipped"][0]["reason"]}
    ]
    assert set(res) >= {"fid", "kid"} and "ssim" not in res


def test_eval_bad_arguments_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    rc, _, err = _run(["--real", str(tmp_path / "nope"), "--fake", str(tmp_path / "a")], capsys)
    assert rc == 2 and "nope" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(
        ["--real", str(tmp_path / "a"), "--fake", str(tmp_path / "a"), "--metrics", "fid,bogus"],
        capsys,
    )
    assert rc == 2 and "bogus" in err
    rc, _, err = _run(
        ["--real", str(tmp_path / "a"), "--fake", str(tmp_path / "a"), "--metrics", "memorization"],
        capsys,
    )
    assert rc == 2 and "--train" in err
    rc, _, err = _run(["--real", str(tmp_path / "a"), "--fake", str(tmp_path / "a")], capsys)
    assert rc == 2 and "no decodable images" in err
