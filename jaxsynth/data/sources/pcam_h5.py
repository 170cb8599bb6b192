"""`pcam_h5:<dir>`: PatchCamelyon HDF5 files (`.h5` or `.h5.gz`, decompressed once into a cache)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxsynth.data.sources.base import (
    PCAM_CLASSES,
    PCAM_SIZE,
    PCAM_SPLITS,
    _existing_dir,
    _NativeSplitSource,
)
from jaxsynth.data.types import CorruptImage, Record, SkipReport
from jaxsynth.errors import UserError


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "jaxsynth-cache"


def _gunzip_cached(path: Path, cache_dir: str | os.PathLike | None) -> Path:
    """Decompress `path` once into the cache, keyed by path, size and mtime.

    The user's folder is never written to (it may be read-only or shared).
    """
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    out_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    out = out_dir / "pcam" / f"{path.name[: -len('.gz')]}.{key[:16]}"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".part{os.getpid()}")
    print(f"decompressing {path} -> {out} (once)", file=sys.stderr, flush=True)
    try:
        with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
    except (OSError, EOFError) as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: not a readable gzip file ({e})") from None
    os.replace(tmp, out)
    return out


class PCamH5Source(_NativeSplitSource):
    """PatchCamelyon HDF5 files, read lazily (one 96x96 tile per `load`).

    Items are ordered train, valid, test (native order inside each); ids are
    `pcam/<split>/<row:06d>`; `split_of(i)` gives PCam's own split name.
    """

    class_names = PCAM_CLASSES
    has_masks = False

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        splits: Sequence[str] | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        import h5py

        self.root = _existing_dir(root, "PatchCamelyon folder")
        self.name = f"pcam_h5:{root}"
        self.skipped = SkipReport()
        explicit = splits is not None
        for s in splits or ():
            if s not in PCAM_SPLITS:
                raise UserError(f"data.splits: PCam has no split {s!r} (train, valid, test)")
        self._x_paths: list[Path] = []
        split_names: list[str] = []
        split_idx, rows, labels = [], [], []
        for split in splits or PCAM_SPLITS:
            x_file = self._find(split, "x")
            y_file = self._find(split, "y")
            if x_file is None and y_file is None:
                if explicit:
                    raise UserError(f"{self._stem(split, 'x')}.h5[.gz]: file does not exist")
                continue
            for f, which in ((x_file, "x"), (y_file, "y")):
                if f is None:
                    raise UserError(f"{self._stem(split, which)}.h5[.gz]: file does not exist")
            x_path = _gunzip_cached(x_file, cache_dir) if x_file.suffix == ".gz" else x_file
            y_path = _gunzip_cached(y_file, cache_dir) if y_file.suffix == ".gz" else y_file
            n = self._check_x(x_path, x_file)
            y = self._read_y(y_path, y_file)
            if len(y) != n:
                raise UserError(f"{y_file}: {len(y)} labels but {x_file.name} has {n} images")
            k = len(split_names)
            split_names.append(split)
            self._x_paths.append(x_path)
            for row, v in enumerate(y):
                if v not in (0, 1):
                    self.skipped.skip(f"pcam/{split}/{row:06d}", "label is not 0 or 1")
                    continue
                split_idx.append(k)
                rows.append(row)
                labels.append(int(v))
        if not split_names:
            raise UserError(
                f"{self.root}: no PatchCamelyon files "
                "(camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5[.gz])"
            )
        self.native_splits = tuple(split_names)
        self._split_idx = np.asarray(split_idx, np.int64)
        self._rows = np.asarray(rows, np.int64)
        self.labels = np.asarray(labels, np.int64)
        self._h5: dict[int, Any] = {}
        del h5py

    def _stem(self, split: str, which: str) -> Path:
        return self.root / f"camelyonpatch_level_2_split_{split}_{which}"

    def _find(self, split: str, which: str) -> Path | None:
        for suffix in (".h5", ".h5.gz"):
            p = Path(str(self._stem(split, which)) + suffix)
            if p.is_file():
                return p
        return None

    @staticmethod
    def _check_x(path: Path, shown: Path) -> int:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "x" not in f:
                    raise UserError(f"{shown}: HDF5 file has no dataset 'x'")
                ds = f["x"]
                shape, dtype = ds.shape, ds.dtype
        except OSError as e:
            raise UserError(f"{shown}: not a readable HDF5 file ({e})") from None
        if len(shape) != 4 or shape[1:] != (PCAM_SIZE, PCAM_SIZE, 3) or dtype != np.uint8:
            raise UserError(
                f"{shown}: dataset 'x' is {dtype}{tuple(shape)}, expected uint8 (N, 96, 96, 3)"
            )
        return int(shape[0])

    @staticmethod
    def _read_y(path: Path, shown: Path) -> np.ndarray:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "y" not in f:
                    raise UserError(f"{shown}: HDF5 file has no dataset 'y'")
                y = np.asarray(f["y"][...])
        except OSError as e:
            raise UserError(f"{shown}: not a readable HDF5 file ({e})") from None
        # WHY so strict: reading column 0 of a one-hot (N, 2) `y` silently inverts every label
        expected = "expected one 0/1 label per image: (N,), (N, 1), (N, 1, 1, 1) or one-hot (N, 2)"
        if y.ndim == 0:
            raise UserError(f"{shown}: dataset 'y' is a scalar; {expected}")
        if y.ndim == 2 and y.shape[1] == 2:
            ok = np.isin(y, (0, 1)).all(axis=1) & (y.sum(axis=1) == 1)
            if not ok.all():
                raise UserError(
                    f"{shown}: 'y' has shape {y.shape} but row {int(np.argmin(ok))} is not "
                    f"one-hot; {expected}"
                )
            print(f"note: {shown}: 'y' is one-hot {y.shape}; label = argmax", file=sys.stderr)
            return np.argmax(y, axis=1)
        if y.ndim > 1 and int(np.prod(y.shape[1:])) != 1:
            raise UserError(f"{shown}: dataset 'y' has shape {y.shape}; {expected}")
        return y.reshape(len(y))

    def __getstate__(self) -> dict:  # open HDF5 handles do not pickle (Grain workers)
        state = dict(self.__dict__)
        state["_h5"] = {}
        return state

    def id_of(self, index: int) -> str:
        return f"pcam/{self.split_of(index)}/{int(self._rows[index]):06d}"

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        import h5py

        k = int(self._split_idx[index])
        try:
            if k not in self._h5:
                self._h5[k] = h5py.File(self._x_paths[k], "r")
            image = np.asarray(self._h5[k]["x"][int(self._rows[index])], np.uint8)
        except OSError as e:
            raise CorruptImage(f"unreadable HDF5 row ({e})") from None
        return Record(image=image, label=self.label_of(index), id=self.id_of(index)), []
