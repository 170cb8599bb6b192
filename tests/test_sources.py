"""Every real-dataset source reads the pixels, labels and ids that were written in its layout."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from dataset_layouts import write_folder, write_kaggle_pcam, write_pcam_h5
from PIL import Image

from jaxsynth.data.sources import (
    FolderSource,
    decode_record,
    encode_record,
    open_source,
    parse_classes,
    scan,
)
from jaxsynth.data.split import pixel_hash, resize_tile
from jaxsynth.data.types import ImageSource, Record
from jaxsynth.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("gz", [False, True])
def test_pcam_h5_reads_every_split_lazily(tmp_path, gz):
    written = write_pcam_h5(tmp_path / "pcam", {"train": 5, "valid": 3, "test": 4}, gz=gz)
    cache = tmp_path / "cache"
    before = sorted(p.name for p in (tmp_path / "pcam").iterdir())
    src = open_source(f"pcam_h5:{tmp_path / 'pcam'}", {"cache_dir": str(cache)})
    assert isinstance(src, ImageSource)
    assert src.class_names == ("normal", "tumour")
    assert len(src) == 12 and src.native_splits == ("train", "valid", "test")
    k = 0
    for split, (x, y) in written.items():
        for row in range(len(y)):
            rec = src.load(k)
            assert src.split_of(k) == split
            assert rec.id == src.id_of(k) == f"pcam/{split}/{row:06d}"
            assert rec.label == src.label_of(k) == y[row]
            np.testing.assert_array_equal(rec.image, x[row])
            k += 1
    # the user's folder is never modified; gz files are decompressed into the cache only
    assert sorted(p.name for p in (tmp_path / "pcam").iterdir()) == before
    cached = list((cache / "pcam").iterdir()) if (cache / "pcam").exists() else []
    assert len(cached) == (6 if gz else 0)
    # a pickled copy (what a Grain worker gets) reads the same pixels
    again = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(again.load(7).image, src.load(7).image)


def test_pcam_h5_split_option_and_missing_file(tmp_path):
    write_pcam_h5(tmp_path, {"train": 2, "valid": 3})
    src = open_source(f"pcam_h5:{tmp_path}", {"splits": "valid"})
    assert len(src) == 3 and {src.split_of(i) for i in range(3)} == {"valid"}
    with pytest.raises(UserError, match="camelyonpatch_level_2_split_test_x.h5"):
        open_source(f"pcam_h5:{tmp_path}", {"splits": ["test"]})
    (tmp_path / "camelyonpatch_level_2_split_train_y.h5").unlink()
    with pytest.raises(UserError, match="split_train_y.h5"):
        open_source(f"pcam_h5:{tmp_path}")


def test_kaggle_pcam_matches_csv_labels(tmp_path):
    good = write_kaggle_pcam(tmp_path, n=6)
    src = open_source(f"kaggle_pcam:{tmp_path}")
    assert len(src) == 6 and len(src.skipped) == 0
    for i in range(len(src)):
        rec = src.load(i)
        file_id = rec.id.split("/", 1)[1]
        image, label = good[file_id]
        np.testing.assert_array_equal(rec.image, image)
        assert rec.label == label == src.label_of(i)
    assert [src.id_of(i) for i in range(6)] == sorted(f"kaggle_pcam/{k}" for k in good)


def test_folder_picks_and_renames_classes_nct_layout(tmp_path):
    written = write_folder(tmp_path, {"ADI": 2, "NORM": 3, "TUM": 4}, size=24)
    src = open_source(f"folder:{tmp_path}", {"classes": ("NORM:normal", "TUM:tumour")})
    assert src.class_names == ("normal", "tumour")
    assert len(src) == 7
    seen = set()
    for i in range(len(src)):
        rec = src.load(i)
        cls = rec.id.split("/")[0]
        assert rec.label == {"NORM": 0, "TUM": 1}[cls] == src.label_of(i)
        assert rec.id.split("/")[1].startswith(f"{cls}-") and rec.id.endswith(".tif")
        np.testing.assert_array_equal(rec.image, written[rec.id])
        seen.add(rec.id)
    assert seen == {k for k in written if not k.startswith("ADI")}
    # default: every subfolder, sorted, native names
    everything = open_source(f"folder:{tmp_path}")
    assert everything.class_names == ("ADI", "NORM", "TUM") and len(everything) == 9


def test_parse_classes_forms():
    assert parse_classes("NORM:normal,TUM") == [("NORM", "normal"), ("TUM", "TUM")]
    assert parse_classes(["A", "B:b"]) == [("A", "A"), ("B", "b")]
    assert parse_classes(None) is None
    with pytest.raises(UserError, match="given twice"):
        parse_classes(["A:x", "B:x"])


def test_class_subset_on_pcam_relabels(tmp_path):
    written = write_pcam_h5(tmp_path, {"train": 8})
    x, y = written["train"]
    src = open_source(f"pcam_h5:{tmp_path}", {"classes": ["tumour:tumour"]})
    assert src.class_names == ("tumour",)
    assert len(src) == int(y.sum())
    rows = np.flatnonzero(y == 1)
    for i, row in enumerate(rows):
        rec = src.load(i)
        assert rec.label == 0 and rec.id == f"pcam/train/{row:06d}"
        np.testing.assert_array_equal(rec.image, x[row])
        assert src.split_of(i) == "train"
    with pytest.raises(UserError, match="no class 'TUM'"):
        open_source(f"pcam_h5:{tmp_path}", {"classes": ["TUM"]})


def test_every_source_pickles_for_grain_workers(tmp_path):
    """Grain spawns workers: a source must survive pickling and read the same pixels after."""
    write_pcam_h5(tmp_path / "pcam", {"train": 4})
    write_kaggle_pcam(tmp_path / "kaggle", n=8)
    write_folder(tmp_path / "nct", {"NORM": 2, "TUM": 2}, size=8)
    mod = _load_script("make_arrayrecord")
    mod.make_arrayrecord(open_source(f"folder:{tmp_path / 'nct'}"), tmp_path / "ar", progress=False)
    sources = [
        open_source(f"pcam_h5:{tmp_path / 'pcam'}", {"classes": ["tumour", "normal"]}),
        open_source(f"kaggle_pcam:{tmp_path / 'kaggle'}", {"classes": ["tumour:t", "normal:n"]}),
        open_source(f"folder:{tmp_path / 'nct'}", {"classes": "TUM:tumour"}),
        open_source(f"arrayrecord:{tmp_path / 'ar'}"),
    ]
    for src in sources:
        src.load(0)  # open file handles first: they must not be pickled
        copy = pickle.loads(pickle.dumps(src))
        assert len(copy) == len(src) and copy.class_names == src.class_names
        for i in range(len(src)):
            a, b = src.load(i), copy.load(i)
            assert (a.id, a.label) == (b.id, b.label)
            np.testing.assert_array_equal(a.image, b.image)


def _fake_tfds(records_by_split):
    """An `as_data_source_fn` for tfds.testing.mock_data serving known records."""

    def as_data_source(self, split, decoders=None, deserialize_method=None, **kwargs):
        return records_by_split[split]

    return as_data_source


def test_tfds_patch_camelyon_via_mock_data(tmp_path):
    rng = np.random.default_rng(3)
    records = {
        s: [
            {"image": rng.integers(0, 256, (96, 96, 3), np.uint8), "label": np.int64(k % 2)}
            for k in range(n)
        ]
        for s, n in (("train", 4), ("validation", 2), ("test", 3))
    }
    with tfds.testing.mock_data(as_data_source_fn=_fake_tfds(records)):
        src = open_source(f"tfds:patch_camelyon@{tmp_path}")
        assert src.class_names == ("normal", "tumour")
        assert src.native_splits == ("train", "validation", "test")
        assert len(src) == 9
        k = 0
        for split, recs in records.items():
            for row, expected in enumerate(recs):
                rec = src.load(k)
                assert rec.id == f"tfds/patch_camelyon/{split}/{row:06d}"
                assert rec.label == int(expected["label"]) == src.label_of(k)
                assert rec.image.shape == (96, 96, 3) and rec.image.dtype == np.uint8
                np.testing.assert_array_equal(rec.image, expected["image"])
                k += 1


def test_tfds_colorectal_histology_default_mock_shapes(tmp_path):
    with tfds.testing.mock_data(num_examples=5):
        src = open_source(f"tfds:colorectal_histology@{tmp_path}")
        assert src.native_splits == ("train",)
        assert src.class_names[:2] == ("tumor", "stroma") and len(src.class_names) == 8
        assert len(src) == 5
        direct = tfds.data_source(
            "colorectal_histology", split="train", data_dir=str(tmp_path), download=False
        )
        for i in range(5):
            rec = src.load(i)
            assert rec.image.shape == (150, 150, 3) and rec.image.dtype == np.uint8
            assert rec.label == int(direct[i]["label"]) and 0 <= rec.label < 8
            np.testing.assert_array_equal(rec.image, direct[i]["image"])


def test_tfds_bad_spec_and_missing_dir(tmp_path):
    with pytest.raises(UserError, match="tfds:<name>@<data_dir>"):
        open_source("tfds:patch_camelyon")
    with pytest.raises(UserError, match="nope.*does not exist"):
        open_source(f"tfds:patch_camelyon@{tmp_path / 'nope'}")


def test_record_encoding_roundtrip():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), np.uint8)
    mask = rng.integers(0, 2, (5, 7), np.uint8)
    back = decode_record(encode_record(Record(image, 1, "a/b", mask)))
    assert back.id == "a/b" and back.label == 1
    np.testing.assert_array_equal(back.image, image)
    np.testing.assert_array_equal(back.mask, mask)


def test_make_arrayrecord_roundtrip_with_resize(tmp_path):
    written = write_folder(tmp_path / "nct", {"NORM": 3, "TUM": 2}, size=24)
    (tmp_path / "nct" / "TUM" / "broken.tif").write_bytes(b"")
    out = tmp_path / "ar"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "data_prep" / "make_arrayrecord.py"),
            "--source",
            f"folder:{tmp_path / 'nct'}",
            "--classes",
            "NORM:normal",
            "TUM:tumour",
            "--resize",
            "16",
            "--records-per-shard",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["items"] == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["shards"]) == 3  # 5 records, 2 per shard
    assert manifest["skipped"] == [{"item": "TUM/broken.tif", "reason": "zero-byte file"}]
    src = open_source(f"arrayrecord:{out}")
    assert src.class_names == ("normal", "tumour") and len(src) == 5
    assert src.skipped.skipped == [("TUM/broken.tif", "zero-byte file")]
    for i in range(len(src)):
        rec = src.load(i)
        expected = resize_tile(written[rec.id], 16)
        np.testing.assert_array_equal(rec.image, expected)
        assert rec.label == {"NORM": 0, "TUM": 1}[rec.id.split("/")[0]]
        assert manifest["items"][i]["sha256"] == pixel_hash(expected)
    good, report = scan(src, progress=False)
    assert good == list(range(5)) and len(report) == 1


def test_arrayrecord_detects_tampered_pixels(tmp_path):
    write_folder(tmp_path / "f", {"A": 2}, size=8)
    mod = _load_script("make_arrayrecord")
    mod.make_arrayrecord(open_source(f"folder:{tmp_path / 'f'}"), tmp_path / "ar", progress=False)
    manifest_path = tmp_path / "ar" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["items"][1]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    src = open_source(f"arrayrecord:{tmp_path / 'ar'}")
    good, report = scan(src, progress=False)
    assert good == [0]
    assert report.skipped == [("A/A-00000001.tif", "pixels do not match the manifest SHA-256")]


def test_make_arrayrecord_help_runs():
    for script in ("make_arrayrecord.py", "tile_frames.py"):
        proc = subprocess.run(
            [sys.executable, str(REPO / "data_prep" / script), "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and "--out" in proc.stdout


def test_tile_frames_writes_folder_tree_with_masks(tmp_path):
    rng = np.random.default_rng(0)
    frames, masks = tmp_path / "frames", tmp_path / "masks"
    frames.mkdir()
    masks.mkdir()
    # two "MITOS-ATYPIA-like" frames at 1/30 scale (51x46), masks of the same size
    frame_px = {}
    for stem in ("A03_00", "A04_01"):
        img = rng.integers(0, 256, (46, 51, 3), np.uint8)
        msk = (rng.random((46, 51)) > 0.7).astype(np.uint8) * 255
        Image.fromarray(img).save(frames / f"{stem}.png")
        Image.fromarray(msk).save(masks / f"{stem}.png")
        frame_px[stem] = (img, msk > 0)
    Image.fromarray(rng.integers(0, 256, (46, 51, 3), np.uint8)).save(frames / "A05_02.png")
    (tmp_path / "classes.csv").write_text("frame,class\nA03_00.png,atypia3\nA04_01,atypia1\n")
    out = tmp_path / "tiles"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "data_prep" / "tile_frames.py"),
            "--frames",
            str(frames),
            "--masks",
            str(masks),
            "--labels",
            str(tmp_path / "classes.csv"),
            "--size",
            "16",
            "--stride",
            "12",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    mod = _load_script("tile_frames")
    positions = mod.tile_positions(46, 51, 16, 12)
    assert positions == [
        (y, x) for y in (0, 12, 24) for x in (0, 12, 24)
    ]  # 24+16 <= 51, 36+16 > 51
    summary = json.loads(proc.stdout)
    assert summary["tiles_per_class"] == {"atypia3": 9, "atypia1": 9}
    manifest = json.loads((out / "tiles_manifest.json").read_text())
    assert manifest["skipped"] == [{"item": "A05_02.png", "reason": "no row in labels CSV"}]
    src = FolderSource(out, mask_root=Path(str(out) + "_masks"))
    assert src.class_names == ("atypia1", "atypia3") and len(src) == 18 and src.has_masks
    for i in range(len(src)):
        rec = src.load(i)
        stem, y, x = rec.id.split("/")[1][: -len(".png")].rsplit("_", 2)
        y, x = int(y[1:]), int(x[1:])
        img, msk = frame_px[stem]
        np.testing.assert_array_equal(rec.image, img[y : y + 16, x : x + 16])
        np.testing.assert_array_equal(rec.mask, msk[y : y + 16, x : x + 16].astype(np.uint8))
