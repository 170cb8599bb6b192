"""Write tiny datasets in the exact on-disk layouts of the real ones (for tests).

Each writer returns what it wrote (pixels, labels, ids) so a test can compare a source's output
against the ground truth instead of against itself. Sizes are the real ones where a source
requires them (PCam 96x96) and tiny elsewhere.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
from pathlib import Path

import h5py
import numpy as np
import tifffile
from PIL import Image

PCAM_SPLITS = ("train", "valid", "test")


def random_tile(rng: np.random.Generator, size: int | tuple[int, int] = 24) -> np.ndarray:
    h, w = (size, size) if isinstance(size, int) else size
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_pcam_h5(
    root: Path, counts: dict[str, int] | None = None, *, gz: bool = False, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`camelyonpatch_level_2_split_<split>_{x,y}.h5[.gz]`; returns {split: (x, y_flat)}."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (counts or {"train": 5, "valid": 3, "test": 4}).items():
        x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        y = rng.integers(0, 2, (n, 1, 1, 1), dtype=np.uint8)
        for which, arr in (("x", x), ("y", y)):
            path = root / f"camelyonpatch_level_2_split_{split}_{which}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset(which, data=arr, chunks=(1,) + arr.shape[1:])
            if gz:
                with open(path, "rb") as src, gzip.open(str(path) + ".gz", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                path.unlink()
        out[split] = (x, y.reshape(-1).astype(np.int64))
    return out


def write_kaggle_pcam(
    root: Path,
    n: int = 6,
    *,
    seed: int = 0,
    extra_rows: list[tuple[str, str]] = (),
    files_without_rows: int = 0,
) -> dict[str, tuple[np.ndarray, int]]:
    """`train/<id>.tif` (96x96) + `train_labels.csv`; returns {id: (image, label)} of good items.

    `extra_rows` are appended to the CSV verbatim (unknown ids, bad labels, duplicates);
    `files_without_rows` more .tif files are written with no CSV row.
    """
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    good = {}
    rows = []
    for k in range(n + files_without_rows):
        file_id = f"{rng.integers(0, 2**63):016x}{k:04d}"
        image = random_tile(rng, 96)
        tifffile.imwrite(root / "train" / f"{file_id}.tif", image)
        if k < n:
            label = int(rng.integers(0, 2))
            good[file_id] = (image, label)
            rows.append((file_id, str(label)))
    with open(root / "train_labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label"])
        w.writerows(rows + list(extra_rows))
    return good


def nct_name(cls: str, k: int) -> str:
    """NCT-CRC-HE-100K file naming: `<CLASS>-<8 uppercase letters/digits>.tif`."""
    return f"{cls}-{k:08X}.tif"


def write_folder(
    root: Path, counts: dict[str, int], *, size: int = 24, seed: int = 0, fmt: str = "tif"
) -> dict[str, np.ndarray]:
    """`<root>/<CLASS>/<CLASS>-XXXXXXXX.tif`; returns {"<CLASS>/<file>": image}."""
    rng = np.random.default_rng(seed)
    out = {}
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            image = random_tile(rng, size)
            name = nct_name(cls, k)
            if fmt != "tif":
                name = name[:-4] + "." + fmt
            if fmt == "tif":
                tifffile.imwrite(root / cls / name, image)
            else:
                Image.fromarray(image).save(root / cls / name)
            out[f"{cls}/{name}"] = image
    return out


def _encoded(image: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    return buf.getvalue()


def salt_folder(class_dir: Path, *, size: int = 24, seed: int = 1) -> tuple[dict, dict]:
    """Add bad and convertible files to one class folder.

    Returns (bad, converted): bad = {file name: expected skip reason};
    converted = {file name: (expected RGB pixels, [expected conversions])}.
    """
    rng = np.random.default_rng(seed)
    class_dir.mkdir(parents=True, exist_ok=True)
    rgb = random_tile(rng, size)
    gray = rng.integers(0, 256, (size, size), dtype=np.uint8)
    bad: dict[str, str] = {}

    def put(name: str, data: bytes, reason: str) -> None:
        (class_dir / name).write_bytes(data)
        bad[name] = reason

    put("zero_bytes.png", b"", "zero-byte file")
    png = _encoded(rgb, "PNG")
    put("truncated.png", png[: len(png) // 2], "truncated or corrupt PNG data")
    put("no_end_chunk.png", png[:-12], "truncated or corrupt PNG data")
    jpg = _encoded(rgb, "JPEG", quality=95)
    put("truncated.jpg", jpg[: len(jpg) * 2 // 3], "truncated or corrupt JPEG data")
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb)
    tif = buf.getvalue()
    put("truncated.tif", tif[: len(tif) // 2], "truncated or corrupt TIFF data")
    put(
        "notes.png",
        b"these are my notes, not an image\n",
        "not an image (unrecognised file format)",
    )
    rgba = np.dstack([rgb, np.full((size, size), 255, np.uint8)])
    rgba_transparent = rgba.copy()
    rgba_transparent[0, 0, 3] = 0
    Image.fromarray(rgba_transparent, "RGBA").save(class_dir / "transparent.png")
    bad["transparent.png"] = "has transparency"
    tifffile.imwrite(class_dir / "float.tif", rgb.astype(np.float32) / 255, photometric="rgb")
    bad["float.tif"] = "unsupported: floating-point pixels"
    Image.fromarray(rgb).convert("CMYK").save(class_dir / "cmyk.jpg")
    bad["cmyk.jpg"] = "unsupported: CMYK colour space"

    converted: dict[str, tuple[np.ndarray, list[str]]] = {}
    Image.fromarray(gray, "L").save(class_dir / "gray.png")
    converted["gray.png"] = (np.repeat(gray[..., None], 3, -1), ["grayscale -> RGB"])
    Image.fromarray(rgba, "RGBA").save(class_dir / "opaque_rgba.png")
    converted["opaque_rgba.png"] = (rgb, ["RGBA (opaque) -> RGB"])
    # low bytes are noise: the high-byte rule must return exactly `rgb`
    wide = rgb.astype(np.uint16) * 256 + rng.integers(0, 256, rgb.shape).astype(np.uint16)
    tifffile.imwrite(class_dir / "rgb16.tif", wide, photometric="rgb")
    converted["rgb16.tif"] = (rgb, ["16-bit -> 8-bit (high byte)"])
    gray16 = gray.astype(np.uint16) * 257
    tifffile.imwrite(class_dir / "gray16.tif", gray16)
    converted["gray16.tif"] = (
        np.repeat(gray[..., None], 3, -1),
        ["16-bit -> 8-bit (high byte)", "grayscale -> RGB"],
    )
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(class_dir / "palette.png")
    converted["palette.png"] = (np.asarray(pal.convert("RGB")), ["palette -> RGB"])
    return bad, converted
