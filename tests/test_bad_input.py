"""Bad inputs are converted when lossless, otherwise skipped with the reason; never a crash."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest
import tifffile
from dataset_layouts import salt_folder, write_folder, write_kaggle_pcam, write_pcam_h5
from PIL import Image

from jaxsynth.data.imageio import decode_image
from jaxsynth.data.sources import open_source, scan
from jaxsynth.data.types import CorruptImage
from jaxsynth.errors import UserError


def test_salted_folder_reports_every_bad_file_and_yields_every_good_one(tmp_path):
    written = write_folder(tmp_path, {"NORM": 4, "TUM": 3}, size=24)
    bad, converted = salt_folder(tmp_path / "TUM", size=24)
    src = open_source(f"folder:{tmp_path}", {"classes": ["NORM:normal", "TUM:tumour"]})
    assert len(src) == 7 + len(bad) + len(converted)
    loaded = {}
    good, report = scan(src, progress=False, on_record=lambda i, r: loaded.update({r.id: r}))
    # every bad file, exactly once, with its reason
    assert dict(report.skipped) == {f"TUM/{name}": reason for name, reason in bad.items()}
    assert len(report.skipped) == len(bad)
    # every good file (plain and converted) is yielded with the right pixels and label
    assert set(loaded) == set(written) | {f"TUM/{n}" for n in converted}
    assert len(good) == len(loaded)
    for item_id, image in written.items():
        np.testing.assert_array_equal(loaded[item_id].image, image)
        assert loaded[item_id].label == (0 if item_id.startswith("NORM") else 1)
    for name, (pixels, _) in converted.items():
        assert loaded[f"TUM/{name}"].image.dtype == np.uint8
        np.testing.assert_array_equal(loaded[f"TUM/{name}"].image, pixels)
    # every conversion is reported, per file
    reported = {}
    for item, what in report.converted:
        reported.setdefault(item, []).append(what)
    assert reported == {f"TUM/{n}": whats for n, (_, whats) in converted.items()}


def _png(array: np.ndarray, mode: str | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_decode_image_edge_cases():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 10, 3), np.uint8)
    image, conv = decode_image(_png(rgb), name="x")
    assert conv == [] and image.shape == (8, 10, 3)
    np.testing.assert_array_equal(image, rgb)
    # wrong size: precise reason, only when a size is expected
    with pytest.raises(CorruptImage, match=r"^wrong size 10x8 \(WxH\), expected 96x96$"):
        decode_image(_png(rgb), name="x", expected_size=96)
    decode_image(_png(rgb), name="x", expected_size=(8, 10))
    # gray + opaque alpha -> RGB; gray + transparent alpha -> skipped
    la = np.dstack([rgb[..., 0], np.full((8, 10), 255, np.uint8)])
    image, conv = decode_image(_png(la, "LA"), name="x")
    np.testing.assert_array_equal(image, np.repeat(rgb[..., :1], 3, -1))
    assert conv == ["gray+alpha (opaque) -> RGB", "grayscale -> RGB"]
    la[3, 3, 1] = 10
    with pytest.raises(CorruptImage, match="^has transparency$"):
        decode_image(_png(la, "LA"), name="x")
    # a palette with a transparent entry is transparency, not a palette conversion
    pal = Image.fromarray(rgb).quantize(colors=4)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=int(np.asarray(pal)[0, 0]))
    with pytest.raises(CorruptImage, match="^has transparency$"):
        decode_image(buf.getvalue(), name="x")
    # 1-bit
    bits = rng.random((8, 10)) > 0.5
    buf = io.BytesIO()
    Image.fromarray(bits).save(buf, format="PNG")
    image, conv = decode_image(buf.getvalue(), name="x")
    np.testing.assert_array_equal(image[..., 1], bits.astype(np.uint8) * 255)
    assert conv == ["1-bit -> 8-bit", "grayscale -> RGB"]
    # 16-bit grayscale PNG through PIL ("I;16"): high byte
    wide = rng.integers(0, 65536, (8, 10)).astype(np.uint16)
    image, conv = decode_image(_png(wide), name="x")
    np.testing.assert_array_equal(image[..., 2], (wide >> 8).astype(np.uint8))
    assert conv == ["16-bit -> 8-bit (high byte)", "grayscale -> RGB"]
    # multi-page TIFF: which page is the tile is not obvious
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([rgb, rgb]), photometric="rgb")
    with pytest.raises(CorruptImage, match="multi-page TIFF"):
        decode_image(buf.getvalue(), name="x")
    # a JPEG with a .png name decodes by content
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    assert decode_image(buf.getvalue(), name="y.png")[0].shape == (8, 10, 3)


def test_decode_image_missing_file(tmp_path):
    with pytest.raises(CorruptImage, match="file disappeared"):
        decode_image(tmp_path / "gone.png", name="gone.png")


def test_folder_expected_size_option_skips_wrong_sizes(tmp_path):
    write_folder(tmp_path, {"A": 2}, size=24)
    write_folder(tmp_path / "x", {"A": 1}, size=20)
    (tmp_path / "x" / "A" / "A-00000000.tif").rename(tmp_path / "A" / "small.tif")
    src = open_source(f"folder:{tmp_path}", {"expected_size": 24, "classes": "A"})
    good, report = scan(src, progress=False)
    assert len(good) == 2
    assert report.skipped == [("A/small.tif", "wrong size 20x20 (WxH), expected 24x24")]
    # folders accept any size by default (the study split resizes)
    assert len(scan(open_source(f"folder:{tmp_path}", {"classes": "A"}), progress=False)[0]) == 3


def test_kaggle_labels_csv_problems_are_each_counted(tmp_path):
    good = write_kaggle_pcam(
        tmp_path,
        n=5,
        files_without_rows=2,
        extra_rows=[("ffffffffffffffff9999", "1"), ("", "0")],
    )
    ids = sorted(good)
    with open(tmp_path / "train_labels.csv", "a") as fh:
        fh.write(f"{ids[0]},2\n")  # bad label (line 9)
        fh.write(f"{ids[1]},{good[ids[1]][1]}\n")  # harmless duplicate (line 10)
        fh.write(f"{ids[2]},{1 - good[ids[2]][1]}\n")  # conflicting duplicate (line 11)
    # one 96x96 file that is really 80x80, and one with a row but zero bytes
    tifffile.imwrite(tmp_path / "train" / f"{ids[3]}.tif", np.zeros((80, 80, 3), np.uint8))
    (tmp_path / "train" / f"{ids[4]}.tif").write_bytes(b"")
    src = open_source(f"kaggle_pcam:{tmp_path}")
    orphans = sorted(
        p.name for p in (tmp_path / "train").iterdir() if p.stem not in good
    )  # files with no CSV row
    listed = dict(src.skipped.skipped)
    expected_listing = {
        "train_labels.csv line 7 (id='ffffffffffffffff9999', label='1')": (
            "labels CSV row with no image file"
        ),
        "train_labels.csv line 8 (id='', label='0')": "labels CSV row with no image file",
        f"train_labels.csv line 9 (id='{ids[0]}', label='2')": "label is not 0 or 1",
        f"train_labels.csv line 10 (id='{ids[1]}', label='{good[ids[1]][1]}')": (
            "duplicate id in labels CSV"
        ),
        f"train_labels.csv line 11 (id='{ids[2]}', label='{1 - good[ids[2]][1]}')": (
            "duplicate id in labels CSV"
        ),
        f"kaggle_pcam/{ids[2]}": "conflicting labels in labels CSV",
        **{f"train/{name}": "image file with no row in labels CSV" for name in orphans},
    }
    assert listed == expected_listing and len(orphans) == 2
    # the conflicting id is gone; the others stay listed until decoded
    assert [src.id_of(i) for i in range(len(src))] == [
        f"kaggle_pcam/{i}" for i in ids if i != ids[2]
    ]
    good_idx, report = scan(src, progress=False)
    assert dict(report.skipped) == {
        **expected_listing,
        f"kaggle_pcam/{ids[3]}": "wrong size 80x80 (WxH), expected 96x96",
        f"kaggle_pcam/{ids[4]}": "zero-byte file",
    }
    assert [src.id_of(i) for i in good_idx] == [f"kaggle_pcam/{ids[0]}", f"kaggle_pcam/{ids[1]}"]
    np.testing.assert_array_equal(src.load(good_idx[0]).image, good[ids[0]][0])


def test_kaggle_csv_without_id_column_is_one_line_error(tmp_path):
    write_kaggle_pcam(tmp_path, n=2)
    (tmp_path / "train_labels.csv").write_text("name,label\nabc,1\n")
    with pytest.raises(UserError, match=r"train_labels.csv: expected columns 'id,label'"):
        open_source(f"kaggle_pcam:{tmp_path}")


def test_pcam_label_outside_0_1_is_skipped(tmp_path):
    written = write_pcam_h5(tmp_path, {"train": 4})
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_train_y.h5", "r+") as f:
        f["y"][2, 0, 0, 0] = 7
    src = open_source(f"pcam_h5:{tmp_path}")
    assert len(src) == 3
    assert src.skipped.skipped == [("pcam/train/000002", "label is not 0 or 1")]
    np.testing.assert_array_equal(src.load(2).image, written["train"][0][3])


def test_pcam_wrong_tile_shape_is_one_line_error(tmp_path):
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_train_x.h5", "w") as f:
        f["x"] = np.zeros((2, 64, 64, 3), np.uint8)
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_train_y.h5", "w") as f:
        f["y"] = np.zeros((2, 1, 1, 1), np.uint8)
    with pytest.raises(UserError, match=r"split_train_x.h5: dataset 'x' is uint8\(2, 64, 64, 3\)"):
        open_source(f"pcam_h5:{tmp_path}")


def test_corrupt_gzip_is_one_line_error(tmp_path):
    (tmp_path / "camelyonpatch_level_2_split_test_x.h5.gz").write_bytes(b"not gzip at all")
    (tmp_path / "camelyonpatch_level_2_split_test_y.h5.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match=r"split_test_x.h5.gz: not a readable gzip file"):
        open_source(f"pcam_h5:{tmp_path}", {"cache_dir": str(tmp_path / "cache")})


@pytest.mark.parametrize(
    "spec",
    ["folder:{p}", "pcam_h5:{p}", "kaggle_pcam:{p}", "arrayrecord:{p}", "tfds:patch_camelyon@{p}"],
)
def test_missing_path_names_the_path(tmp_path, spec):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(UserError, match=f"{missing}.* does not exist") as e:
        open_source(spec.format(p=missing))
    assert "\n" not in str(e.value)


def test_empty_or_missing_class_folder_and_unknown_kind(tmp_path):
    write_folder(tmp_path, {"NORM": 2}, size=8)
    (tmp_path / "TUM").mkdir()
    (tmp_path / "TUM" / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    with pytest.raises(UserError, match=f"{tmp_path / 'TUM'}: class folder 'TUM' is empty"):
        open_source(f"folder:{tmp_path}")
    with pytest.raises(UserError, match="class folder 'LYM' does not exist"):
        open_source(f"folder:{tmp_path}", {"classes": ["NORM", "LYM"]})
    empty_root = tmp_path / "empty_root"
    empty_root.mkdir()
    with pytest.raises(UserError, match="no class subfolders"):
        open_source(f"folder:{empty_root}")
    with pytest.raises(UserError, match="unknown source 'imagenet:/x'"):
        open_source("imagenet:/x")
    with pytest.raises(UserError, match="names no path"):
        open_source("folder:")
