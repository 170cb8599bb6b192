"""`jaxsynth data inspect|preview`: one JSON object, a labelled grid, one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dataset_layouts import salt_folder, write_folder, write_pcam_h5
from PIL import Image

from jaxsynth.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_salted_folder_reports_everything(tmp_path, capsys):
    write_folder(tmp_path, {"NORM": 3, "TUM": 2, "ADI": 1}, size=24)
    bad, converted = salt_folder(tmp_path / "TUM", size=24)
    code, out, err = _run(
        capsys,
        [
            "data",
            "inspect",
            "--source",
            f"folder:{tmp_path}",
            "--classes",
            "NORM:normal",
            "TUM:tumour",
        ],
    )
    assert code == 0, err
    summary = json.loads(out)  # exactly one JSON object on stdout
    assert summary["source"] == f"folder:{tmp_path}"
    assert summary["class_names"] == ["normal", "tumour"]
    n_tum = 2 + len(bad) + len(converted)
    assert summary["counts"] == {"normal": 3, "tumour": n_tum}
    assert summary["usable"] == {"normal": 3, "tumour": 2 + len(converted)}
    assert summary["image_sizes_wxh"] == {"24x24": 5 + len(converted)}
    assert summary["has_masks"] is False
    assert summary["skipped"] == len(bad)
    assert {d["item"]: d["reason"] for d in summary["skipped_items"]} == {
        f"TUM/{k}": v for k, v in bad.items()
    }
    assert sum(summary["skipped_by_reason"].values()) == len(bad)
    assert summary["skipped_by_reason"]["truncated or corrupt PNG data"] == 2
    assert {d["item"] for d in summary["converted_items"]} == {f"TUM/{k}" for k in converted}
    assert summary["converted_by_what"]["16-bit -> 8-bit (high byte)"] == 2
    assert summary["converted_files"] == len(converted)
    assert summary["converted"] == sum(len(w) for _, w in converted.values())
    assert "scan folder:" in err  # progress goes to stderr, not into the JSON


def test_inspect_pcam_counts_per_native_split_and_limit(tmp_path, capsys):
    written = write_pcam_h5(tmp_path, {"train": 6, "valid": 2, "test": 3}, gz=True)
    cache = tmp_path / "cache"
    code, out, err = _run(
        capsys,
        ["data", "inspect", "--source", f"pcam_h5:{tmp_path}", "--option", f"cache_dir={cache}"],
    )
    assert code == 0, err
    summary = json.loads(out)
    for split, (_, y) in written.items():
        assert summary["counts_by_split"][split] == {
            "normal": int(np.sum(y == 0)),
            "tumour": int(np.sum(y == 1)),
        }
    assert summary["image_sizes_wxh"] == {"96x96": 11} and summary["skipped"] == 0
    code, out, _ = _run(
        capsys,
        [
            "data",
            "inspect",
            "--source",
            f"pcam_h5:{tmp_path}",
            "--option",
            f"cache_dir={cache}",
            "--limit",
            "4",
            "--no-progress",
        ],
    )
    limited = json.loads(out)
    assert limited["scanned"] == 4 and sum(limited["usable"].values()) == 4
    assert limited["num_items"] == 11  # counts still cover the whole listing


def test_preview_writes_labelled_grid(tmp_path, capsys):
    write_folder(tmp_path / "nct", {"NORM": 5, "TUM": 3}, size=24)
    (tmp_path / "nct" / "TUM" / "empty.tif").write_bytes(b"")
    out_png = tmp_path / "grid.png"
    code, out, err = _run(
        capsys,
        [
            "data",
            "preview",
            "--source",
            f"folder:{tmp_path / 'nct'}",
            "--out",
            str(out_png),
            "--per-class",
            "4",
            "--tile-size",
            "32",
            "--seed",
            "1",
        ],
    )
    assert code == 0, err
    assert json.loads(out)["shown"] == {"NORM": 4, "TUM": 3}
    grid = np.asarray(Image.open(out_png).convert("RGB"))
    # two rows of 32 px tiles with 4 px padding; 4 columns after the label column
    assert grid.shape[0] == 2 * (32 + 4) + 4
    label_w = grid.shape[1] - 4 * (32 + 4) - 4
    assert label_w > 10
    label_column = grid[:, :label_w]
    assert (label_column < 128).any()  # the class names are drawn in black
    tile_area = grid[4:36, label_w : label_w + 32]
    assert tile_area.std() > 30  # random tissue pixels, not background


@pytest.mark.parametrize(
    "spec, needle",
    [("folder:{p}/missing", "{p}/missing"), ("pcam_h5:{p}/nope", "{p}/nope")],
)
def test_missing_path_exit_2_single_line(tmp_path, capsys, spec, needle):
    code, out, err = _run(capsys, ["data", "inspect", "--source", spec.format(p=tmp_path)])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxsynth: error: ")
    assert needle.format(p=tmp_path) in lines[0] and "does not exist" in lines[0]


def test_empty_class_exit_2_single_line(tmp_path, capsys):
    write_folder(tmp_path, {"NORM": 2}, size=8)
    (tmp_path / "TUM").mkdir()
    code, out, err = _run(capsys, ["data", "inspect", "--source", f"folder:{tmp_path}"])
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"jaxsynth: error: {tmp_path / 'TUM'}: class folder 'TUM' is empty"
    ]


def test_subprocess_inspect_real_console_script(tmp_path):
    write_folder(tmp_path, {"NORM": 2, "TUM": 2}, size=16)
    (tmp_path / "TUM" / "zero.png").write_bytes(b"")
    exe = Path(sys.executable).with_name("jaxsynth")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jaxsynth.cli"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ok = subprocess.run(
        cmd + ["data", "inspect", "--source", f"folder:{tmp_path}", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["usable"] == {"NORM": 2, "TUM": 2}
    assert summary["skipped_items"] == [{"item": "TUM/zero.png", "reason": "zero-byte file"}]
    bad = subprocess.run(
        cmd + ["data", "inspect", "--source", f"kaggle_pcam:{tmp_path}/absent"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"jaxsynth: error: {tmp_path}/absent: Kaggle PCam folder does not exist"
    ]


def test_inspect_phantom_smoke(capsys):
    code, out, err = _run(
        capsys,
        [
            "data",
            "inspect",
            "--source",
            "phantom",
            "--option",
            "phantom.num_per_class=3",
            "--option",
            "image_size=32",
            "--no-progress",
        ],
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["class_names"] == ["normal", "tumour"]
    assert summary["counts"] == {"normal": 3, "tumour": 3} == summary["usable"]
    assert summary["image_sizes_wxh"] == {"32x32": 6}
    assert summary["has_masks"] is True and summary["masks_seen"] == 6
    assert summary["skipped"] == 0
