"""Open any dataset the project reads, by a one-line spec, behind the `ImageSource` interface.

Specs (the `data.source` config key and `--source` on the command line):

- `phantom`: the built-in simulated H&E tiles (`jaxsynth.data.phantom`)
- `pcam_h5:<dir>`: PatchCamelyon HDF5,
  `camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5` or `.h5.gz` (a gz file is
  decompressed once into a cache dir, never next to the user's files)
- `kaggle_pcam:<dir>`: Kaggle's PCam copy, `<dir>/train/<id>.tif` + `<dir>/train_labels.csv`
- `folder:<root>`: `<root>/<CLASS>/<image files>` (the NCT-CRC-HE-100K layout)
- `tfds:<name>@<data_dir>`: `patch_camelyon` / `colorectal_histology` already prepared (as
  array_record) in a local TFDS data dir; read with `tfds.data_source`, no TensorFlow
- `arrayrecord:<dir>`: shards + `manifest.json` written by `data_prep/make_arrayrecord.py`

Options (a flat mapping; nested mappings such as a config's `data.phantom` group are flattened to
`phantom.num_per_class`; keys a source does not use are ignored, because the whole `data` config
group is passed here):

- `classes`: which classes, in label order, each `NATIVE` or `NATIVE:NAME` to rename, e.g.
  `("NORM:normal", "TUM:tumour")` for NCT-CRC-HE-100K. A single comma-separated string works too.
  Default: all classes of the source, native names (folders: all subfolders, sorted).
- `splits`: native splits to read (PCam `train`/`valid`/`test`; TFDS split names). Default all.
- `cache_dir`: where gzipped PCam files are decompressed (default `<tmp>/jaxsynth-cache`).
- `expected_size`: folder sources only; reject tiles of another size (default: any size, the
  study split resizes). PCam-style sources always require 96x96.
- `mask_root`: folder sources only; a parallel `<mask_root>/<CLASS>/<stem>.*` tree of masks.
- `image_size`, `seed`, `phantom.num_per_class`, `phantom.difficulty`: the phantom.

Bad data never crashes a run: whatever is wrong with a whole dataset (missing path, empty class,
a labels CSV without an `id` column) is a one-line `UserError`; whatever is wrong with one item is
found either when listing (orphan CSV rows, bad labels: recorded in `source.skipped`) or when
decoding (`load` raises `CorruptImage`); `scan` collects both into one `SkipReport`.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxsynth.data.imageio import decode_image, decode_mask, skipped_entries
from jaxsynth.data.types import CorruptImage, ImageSource, Record, SkipReport
from jaxsynth.errors import UserError

__all__ = [
    "ArrayRecordSource",
    "FolderSource",
    "KagglePCamSource",
    "PCamH5Source",
    "TfdsSource",
    "decode_record",
    "encode_record",
    "load_with_conversions",
    "open_source",
    "parse_classes",
    "parse_options",
    "scan",
]

SOURCE_KINDS = ("phantom", "pcam_h5", "kaggle_pcam", "folder", "tfds", "arrayrecord")
PCAM_CLASSES = ("normal", "tumour")  # PCam label 1 = tumour tissue in the centre 32x32
PCAM_SPLITS = ("train", "valid", "test")
PCAM_SIZE = 96
ARRAYRECORD_FORMAT = "jaxsynth-arrayrecord-v1"


# ---------------------------------------------------------------------------------------------
# Entry points


def open_source(spec: str, options: Mapping | None = None) -> ImageSource:
    """Open the source named by `spec` (see the module docstring) with `options`."""
    opts = _flatten(options or {})
    spec = str(spec).strip()
    kind, _, rest = spec.partition(":")
    if kind not in SOURCE_KINDS:
        raise UserError(
            f"data.source: unknown source '{spec}' (expected one of: phantom, pcam_h5:<dir>, "
            "kaggle_pcam:<dir>, folder:<root>, tfds:<name>@<data_dir>, arrayrecord:<dir>)"
        )
    if kind != "phantom" and not rest:
        raise UserError(f"data.source: '{spec}' names no path (write {kind}:<path>)")
    classes = parse_classes(opts.get("classes"))
    if kind == "folder":
        return FolderSource(
            rest,
            classes=classes,
            expected_size=opts.get("expected_size"),
            mask_root=opts.get("mask_root"),
        )
    if kind == "phantom":
        source: Any = _open_phantom(opts)
    elif kind == "pcam_h5":
        source = PCamH5Source(rest, splits=_splits(opts), cache_dir=opts.get("cache_dir"))
    elif kind == "kaggle_pcam":
        source = KagglePCamSource(rest)
    elif kind == "tfds":
        source = TfdsSource(rest, splits=_splits(opts))
    else:
        source = ArrayRecordSource(rest)
    return _select_classes(source, classes)


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """Command-line `KEY=VALUE` strings -> an options dict (numbers become int/float)."""
    options: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--option {item!r}: expected KEY=VALUE")
        value: Any = text.strip()
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        options[key.strip()] = value
    return options


def parse_classes(value: Any) -> list[tuple[str, str]] | None:
    """`("NORM:normal", "TUM")` or `"NORM:normal,TUM"` -> [("NORM", "normal"), ("TUM", "TUM")]."""
    if value is None or value == () or value == []:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise UserError(f"data.classes: entries must be 'NAME' or 'NATIVE:NAME', got {item!r}")
        native, _, new = item.strip().partition(":")
        out.append((native.strip(), (new or native).strip()))
    for what, names in (("class", [n for n, _ in out]), ("name", [m for _, m in out])):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserError(f"data.classes: {what} {dup[0]!r} given twice")
    return out


def load_with_conversions(source: ImageSource, index: int) -> tuple[Record, list[str]]:
    """`source.load(index)` plus the lossless conversions that were applied to the pixels."""
    fn = getattr(source, "load_with_conversions", None)
    if fn is not None:
        return fn(index)
    return source.load(index), []


def scan(
    source: ImageSource,
    progress: bool = True,
    *,
    indices: Iterable[int] | None = None,
    on_record: Callable[[int, Record], None] | None = None,
) -> tuple[list[int], SkipReport]:
    """Decode every item (or `indices`) once: the usable indices and a report of all bad items.

    The report starts with what the source skipped while listing (`source.skipped`), then adds
    each item whose `load` raised `CorruptImage` and each conversion applied. Progress (items/s,
    ETA) goes to stderr about every two seconds when `progress` is true.
    """
    report = SkipReport()
    if getattr(source, "skipped", None) is not None:
        report.merge(source.skipped)
    todo = list(range(len(source)) if indices is None else indices)
    good: list[int] = []
    start = last = time.monotonic()
    for k, i in enumerate(todo):
        try:
            record, conversions = load_with_conversions(source, i)
        except CorruptImage as e:
            report.skip(source.id_of(i), str(e))
        else:
            good.append(i)
            for what in conversions:
                report.convert(record.id, what)
            if on_record is not None:
                on_record(i, record)
        now = time.monotonic()
        if progress and (now - last > 2.0 or k + 1 == len(todo)) and len(todo) > 1:
            rate = (k + 1) / max(now - start, 1e-9)
            eta = (len(todo) - k - 1) / max(rate, 1e-9)
            print(
                f"scan {source.name}: {k + 1}/{len(todo)} items, {rate:.0f}/s, ETA {eta:.0f}s, "
                f"{len(report)} skipped",
                file=sys.stderr,
                flush=True,
            )
            last = now
    return good, report


# ---------------------------------------------------------------------------------------------
# Options and class selection


def _flatten(options: Mapping, prefix: str = "") -> dict[str, Any]:
    if hasattr(options, "to_dict"):  # ml_collections.ConfigDict
        options = options.to_dict()
    out: dict[str, Any] = {}
    for key, value in dict(options).items():
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        if isinstance(value, Mapping) and key not in ("split",):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _splits(opts: Mapping) -> tuple[str, ...] | None:
    value = opts.get("splits")
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    if not items or not all(isinstance(s, str) and s.strip() for s in items):
        raise UserError(f"data.splits: expected split names, got {value!r}")
    return tuple(s.strip() for s in items)


def _open_phantom(opts: Mapping) -> ImageSource:
    from jaxsynth.data.phantom import PhantomSource  # lazy: only phantom users pay for it

    kwargs = {}
    for key, arg, cast in (
        ("phantom.num_per_class", "num_per_class", int),
        ("phantom.difficulty", "difficulty", float),
        ("image_size", "image_size", int),
        ("seed", "seed", int),
    ):
        if opts.get(key) is not None:
            try:
                kwargs[arg] = cast(opts[key])
            except (TypeError, ValueError):
                raise UserError(f"{key}: expected {cast.__name__}, got {opts[key]!r}") from None
    try:
        return PhantomSource(**kwargs)
    except ValueError as e:
        raise UserError(f"phantom: {e}") from None


def _select_classes(source: Any, classes: list[tuple[str, str]] | None) -> Any:
    if classes is None or classes == [(c, c) for c in source.class_names]:
        return source
    if hasattr(source, "split_of"):
        return SplitClassSubset(source, classes)
    return ClassSubset(source, classes)


class _LabelledSource:
    """What every source here shares: labels in `self.labels`, decoding in
    `load_with_conversions` (the conversions go to the skip report; `load` drops them)."""

    labels: np.ndarray

    def label_of(self, index: int) -> int:
        return int(self.labels[index])

    def load(self, index: int) -> Record:
        return self.load_with_conversions(index)[0]

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        raise NotImplementedError


class _NativeSplitSource(_LabelledSource):
    """A source made of a dataset's own splits (PCam, TFDS): one row per record."""

    native_splits: tuple[str, ...]
    _split_idx: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def split_of(self, index: int) -> str:
        return self.native_splits[self._split_idx[index]]


class ClassSubset(_LabelledSource):
    """A view of `base` with only some classes, relabelled in the order given and maybe renamed.

    Listing-time skips and native splits of the base source are passed through.
    """

    def __init__(self, base: Any, classes: list[tuple[str, str]]):
        native = list(base.class_names)
        missing = [n for n, _ in classes if n not in native]
        if missing:
            raise UserError(
                f"data.classes: {base.name} has no class {missing[0]!r} "
                f"(its classes: {', '.join(native)})"
            )
        self.base = base
        self.name = base.name
        self.class_names = tuple(new for _, new in classes)
        self.has_masks = base.has_masks
        self.skipped = getattr(base, "skipped", SkipReport())
        labels = _labels_of(base)
        self._new_label = {native.index(n): k for k, (n, _) in enumerate(classes)}
        keep = np.isin(labels, list(self._new_label))
        self._indices = np.flatnonzero(keep)
        self.labels = np.asarray([self._new_label[int(v)] for v in labels[keep]], np.int64)
        for k, (n, _) in enumerate(classes):
            if not np.any(self.labels == k):
                raise UserError(f"{base.name}: class {n!r} has no items")

    def __len__(self) -> int:
        return len(self._indices)

    def id_of(self, index: int) -> str:
        return self.base.id_of(int(self._indices[index]))

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        record, conversions = load_with_conversions(self.base, int(self._indices[index]))
        return dataclasses.replace(record, label=self.label_of(index)), conversions


class SplitClassSubset(ClassSubset):
    """A `ClassSubset` of a source with native splits (PCam, TFDS): keeps `split_of`."""

    @property
    def native_splits(self) -> tuple[str, ...]:
        return self.base.native_splits

    def split_of(self, index: int) -> str:
        return self.base.split_of(int(self._indices[index]))


def _labels_of(source: Any) -> np.ndarray:
    labels = getattr(source, "labels", None)
    if labels is not None:
        return np.asarray(labels, np.int64)
    return np.fromiter((source.label_of(i) for i in range(len(source))), np.int64, len(source))


def _existing_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise UserError(f"{p}: {what} does not exist")
    if not p.is_dir():
        raise UserError(f"{p}: {what} is not a directory")
    return p


def _visible_files(directory: Path) -> list[Path]:
    """Regular, non-hidden files (no .DS_Store, ._* resource forks), sorted by name."""
    return sorted(p for p in directory.iterdir() if not p.name.startswith(".") and p.is_file())


# ---------------------------------------------------------------------------------------------
# folder:<root>


class FolderSource(_LabelledSource):
    """`<root>/<CLASS>/<image>`: one subfolder per class (NCT-CRC-HE-100K layout).

    Ids are `<CLASS>/<file name>` with the native folder name, stable across runs. Every
    non-hidden file in a class folder is an item (a stray .txt is reported as "not an image"
    rather than silently ignored); subfolders inside a class folder are ignored.
    """

    has_masks = False

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        classes: list[tuple[str, str]] | None = None,
        expected_size: int | Sequence[int] | None = None,
        mask_root: str | os.PathLike | None = None,
    ):
        self.root = _existing_dir(root, "image folder root")
        self.name = f"folder:{root}"
        self.expected_size = expected_size
        self.skipped = SkipReport()
        if classes is None:
            found = sorted(
                p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
            if not found:
                raise UserError(
                    f"{self.root}: no class subfolders (expected <root>/<CLASS>/<image files>)"
                )
            classes = [(c, c) for c in found]
        self.class_names = tuple(new for _, new in classes)
        self.native_classes = tuple(n for n, _ in classes)
        self.mask_root = None if mask_root is None else _existing_dir(mask_root, "mask root")
        self.has_masks = self.mask_root is not None
        paths: list[Path] = []
        masks: list[Path | None] = []
        labels: list[int] = []
        for label, (native, _) in enumerate(classes):
            class_dir = self.root / native
            if not class_dir.is_dir():
                available = sorted(p.name for p in self.root.iterdir() if p.is_dir())
                raise UserError(
                    f"{class_dir}: class folder '{native}' does not exist "
                    f"(found: {', '.join(available) or 'none'})"
                )
            files = _visible_files(class_dir)
            for name, why in skipped_entries(class_dir):  # FIFOs, symlink loops: listed
                self.skipped.skip(f"{native}/{name}", why)
            if not files:
                raise UserError(f"{class_dir}: class folder '{native}' is empty")
            mask_by_stem = self._mask_index(native)
            for f in files:
                mask = None
                if self.has_masks:
                    mask = mask_by_stem.get(f.stem)
                    if mask is None:
                        self.skipped.skip(f"{native}/{f.name}", "no mask file in mask_root")
                        continue
                paths.append(f)
                masks.append(mask)
                labels.append(label)
        self._paths = paths
        self._masks = masks
        self.labels = np.asarray(labels, np.int64)

    def _mask_index(self, native: str) -> dict[str, Path]:
        if self.mask_root is None:
            return {}
        mask_dir = self.mask_root / native
        if not mask_dir.is_dir():
            raise UserError(f"{mask_dir}: mask folder for class '{native}' does not exist")
        return {p.stem: p for p in _visible_files(mask_dir)}

    def __len__(self) -> int:
        return len(self._paths)

    def id_of(self, index: int) -> str:
        p = self._paths[index]
        return f"{p.parent.name}/{p.name}"

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        name = self.id_of(index)
        image, conversions = decode_image(
            self._paths[index], name=name, expected_size=self.expected_size
        )
        mask = None
        if self.has_masks:
            try:
                mask = decode_mask(self._masks[index], name=name)
            except CorruptImage as e:
                raise CorruptImage(f"mask: {e}") from None
            if mask.shape != image.shape[:2]:
                raise CorruptImage("mask size differs from image size")
        return Record(image=image, label=self.label_of(index), id=name, mask=mask), conversions


# ---------------------------------------------------------------------------------------------
# pcam_h5:<dir>


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


# ---------------------------------------------------------------------------------------------
# kaggle_pcam:<dir>


class KagglePCamSource(_LabelledSource):
    """Kaggle's PCam copy: `<dir>/train/<id>.tif` (96x96) labelled by `<dir>/train_labels.csv`.

    Ids are `kaggle_pcam/<id>`, sorted. Problems found while matching the CSV to the files are
    recorded in `skipped` with the CSV line or file as the item: rows whose id has no file, files
    with no row, labels other than 0/1, repeated ids (later rows dropped; an id whose rows disagree
    on the label is dropped altogether).
    """

    class_names = PCAM_CLASSES
    has_masks = False

    def __init__(self, root: str | os.PathLike):
        self.root = _existing_dir(root, "Kaggle PCam folder")
        self.name = f"kaggle_pcam:{root}"
        self.skipped = SkipReport()
        train_dir = _existing_dir(self.root / "train", "Kaggle PCam image folder")
        csv_path = self.root / "train_labels.csv"
        if not csv_path.is_file():
            raise UserError(f"{csv_path}: labels file does not exist")
        files = {p.stem: p for p in _visible_files(train_dir)}
        rows = self._read_csv(csv_path)
        first_label: dict[str, int] = {}
        conflicting: set[str] = set()
        for line, file_id, raw in rows:
            item = f"train_labels.csv line {line} (id={file_id!r}, label={raw!r})"
            if raw not in ("0", "1"):
                self.skipped.skip(item, "label is not 0 or 1")
            elif file_id in first_label:
                if first_label[file_id] != int(raw):
                    conflicting.add(file_id)
                self.skipped.skip(item, "duplicate id in labels CSV")
            elif file_id not in files:
                self.skipped.skip(item, "labels CSV row with no image file")
            else:
                first_label[file_id] = int(raw)
        for file_id in sorted(conflicting):
            del first_label[file_id]
            self.skipped.skip(f"kaggle_pcam/{file_id}", "conflicting labels in labels CSV")
        for file_id, path in files.items():
            if file_id not in first_label and file_id not in conflicting:
                self.skipped.skip(f"train/{path.name}", "image file with no row in labels CSV")
        self._ids = sorted(first_label)
        if not self._ids:
            raise UserError(f"{csv_path}: no row matches an image file in {train_dir}")
        self._paths = [files[i] for i in self._ids]
        self.labels = np.asarray([first_label[i] for i in self._ids], np.int64)

    @staticmethod
    def _read_csv(path: Path) -> list[tuple[int, str, str]]:
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                fields = [f.strip() for f in reader.fieldnames or []]
                if "id" not in fields or "label" not in fields:
                    raise UserError(
                        f"{path}: expected columns 'id,label', found {','.join(fields) or 'none'}"
                    )
                reader.fieldnames = fields
                return [
                    (reader.line_num, (r["id"] or "").strip(), (r["label"] or "").strip())
                    for r in reader
                ]
        except (UnicodeDecodeError, csv.Error) as e:
            raise UserError(f"{path}: not a readable CSV file ({e})") from None

    def __len__(self) -> int:
        return len(self._ids)

    def id_of(self, index: int) -> str:
        return f"kaggle_pcam/{self._ids[index]}"

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        name = self.id_of(index)
        image, conversions = decode_image(self._paths[index], name=name, expected_size=PCAM_SIZE)
        return Record(image=image, label=self.label_of(index), id=name), conversions


# ---------------------------------------------------------------------------------------------
# tfds:<name>@<data_dir>

TFDS_DEFAULT_SPLITS = {
    "patch_camelyon": ("train", "validation", "test"),
    "colorectal_histology": ("train",),
}


class TfdsSource(_NativeSplitSource):
    """A TFDS dataset already prepared as array_record in a local data dir (no TensorFlow).

    Labels of all records are read once at open time (with image decoding skipped), since a
    study split must stratify by class. `patch_camelyon` labels are named ("normal", "tumour");
    other datasets use their ClassLabel names. Ids are `tfds/<name>/<split>/<row:06d>`.
    """

    has_masks = False

    def __init__(self, rest: str, *, splits: Sequence[str] | None = None):
        name, at, data_dir = rest.partition("@")
        if not at or not name or not data_dir:
            raise UserError(f"data.source: 'tfds:{rest}' must be tfds:<name>@<data_dir>")
        self.data_dir = _existing_dir(data_dir, "TFDS data dir")
        self.dataset = name
        self.name = f"tfds:{rest}"
        self.skipped = SkipReport()
        import tensorflow_datasets as tfds

        base_name = name.split(":")[0].split("/")[0]
        try:
            info = tfds.builder(name, data_dir=str(self.data_dir)).info
        except Exception as e:  # noqa: BLE001 - unknown dataset name etc.
            raise UserError(f"tfds: cannot open dataset {name!r} ({_first_line(e)})") from None
        if base_name == "patch_camelyon":
            self.class_names = PCAM_CLASSES
        else:
            self.class_names = tuple(info.features["label"].names)
        known = tuple(info.splits.keys()) if info.splits else ()
        self.native_splits = tuple(
            splits or known or TFDS_DEFAULT_SPLITS.get(base_name, ("train",))
        )
        self._sources: dict[int, Any] = {}
        split_idx, rows, labels = [], [], []
        for k in range(len(self.native_splits)):
            split_labels = self._read_labels(k)
            split_idx += [k] * len(split_labels)
            rows += range(len(split_labels))
            labels += split_labels
        self._split_idx = np.asarray(split_idx, np.int64)
        self._rows = np.asarray(rows, np.int64)
        self.labels = np.asarray(labels, np.int64)
        if len(self.labels) == 0:
            raise UserError(f"tfds: {name} in {self.data_dir} has no records")

    def _read_labels(self, k: int) -> list[int]:
        """Labels of split k, leaving the images undecoded where TFDS allows it (much faster).

        `SkipDecoding` forwards the encoded image bytes in TFDS's NumPy path; if it fails
        anyway (e.g. under `tfds.testing.mock_data`, whose generator needs TensorFlow to
        re-encode), the labels are read with full decoding instead.
        """
        import contextlib
        import io

        import tensorflow_datasets as tfds

        ds = self._open(k)
        n = len(ds)
        try:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):  # TFDS prints a banner when it tries to import TensorFlow
                fast = tfds.data_source(
                    self.dataset,
                    split=self.native_splits[k],
                    data_dir=str(self.data_dir),
                    download=False,
                    decoders={"image": tfds.decode.SkipDecoding()},
                )
                if n:
                    int(fast[0]["label"])
        except Exception:  # noqa: BLE001 - fall back to full decoding
            fast = ds
        return [int(fast[row]["label"]) for row in range(n)]

    def _open(self, k: int) -> Any:
        if k not in self._sources:
            import tensorflow_datasets as tfds

            split = self.native_splits[k]
            try:
                self._sources[k] = tfds.data_source(
                    self.dataset, split=split, data_dir=str(self.data_dir), download=False
                )
            except Exception as e:  # noqa: BLE001 - not prepared, wrong format, bad split
                raise UserError(
                    f"tfds: {self.dataset} split {split!r} is not prepared as array_record in "
                    f"{self.data_dir} ({_first_line(e)})"
                ) from None
        return self._sources[k]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_sources"] = {}
        return state

    def id_of(self, index: int) -> str:
        return f"tfds/{self.dataset}/{self.split_of(index)}/{int(self._rows[index]):06d}"

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        try:
            record = self._open(int(self._split_idx[index]))[int(self._rows[index])]
            image = np.asarray(record["image"])
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a corrupt record
            raise CorruptImage(f"unreadable TFDS record ({_first_line(e)})") from None
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise CorruptImage(f"unsupported: TFDS image {image.dtype}{tuple(image.shape)}")
        return Record(image=image, label=self.label_of(index), id=self.id_of(index)), []


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# arrayrecord:<dir>  (written by data_prep/make_arrayrecord.py)

_RECORD_MAGIC = b"JSR1"


def encode_record(record: Record) -> bytes:
    """One record as bytes: magic, header length, JSON header, raw image bytes, raw mask bytes."""
    image = np.ascontiguousarray(record.image, np.uint8)
    header = {
        "id": record.id,
        "label": int(record.label),
        "shape": list(image.shape),
        "mask": record.mask is not None,
    }
    head = json.dumps(header).encode()
    parts = [_RECORD_MAGIC, struct.pack("<I", len(head)), head, image.tobytes()]
    if record.mask is not None:
        parts.append(np.ascontiguousarray(record.mask, np.uint8).tobytes())
    return b"".join(parts)


def decode_record(data: bytes) -> Record:
    """Inverse of `encode_record`; raises CorruptImage on anything malformed."""
    try:
        if data[:4] != _RECORD_MAGIC:
            raise ValueError("bad magic")
        (n,) = struct.unpack("<I", data[4:8])
        header = json.loads(data[8 : 8 + n])
        h, w, c = header["shape"]
        start = 8 + n
        image = np.frombuffer(data, np.uint8, h * w * c, start).reshape(h, w, c)
        mask = None
        if header["mask"]:
            mask = np.frombuffer(data, np.uint8, h * w, start + h * w * c).reshape(h, w)
        return Record(image=image.copy(), label=int(header["label"]), id=header["id"], mask=mask)
    except (ValueError, KeyError, TypeError, struct.error) as e:
        raise CorruptImage(f"malformed ArrayRecord record ({e})") from None


class ArrayRecordSource(_LabelledSource):
    """A dataset prepared by `data_prep/make_arrayrecord.py`: shards + `manifest.json`.

    Labels and ids come from the manifest (no decoding); `load` checks each image against its
    SHA-256 in the manifest. What was skipped while preparing is restored into `skipped`.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = _existing_dir(root, "ArrayRecord dataset folder")
        self.name = f"arrayrecord:{root}"
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise UserError(f"{manifest_path}: manifest does not exist")
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != ARRAYRECORD_FORMAT:
                raise ValueError(f"format is {manifest.get('format')!r}")
            items = manifest["items"]
            self.class_names = tuple(manifest["class_names"])
            self.has_masks = bool(manifest["has_masks"])
            self._shards = [self.root / s["file"] for s in manifest["shards"]]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{manifest_path}: not a jaxsynth ArrayRecord manifest ({e})") from None
        for shard in self._shards:
            if not shard.is_file():
                raise UserError(f"{shard}: shard listed in the manifest does not exist")
        self.manifest = manifest
        self._ids = [it["id"] for it in items]
        self._hashes = [it["sha256"] for it in items]
        self._where = np.asarray([(it["shard"], it["index"]) for it in items], np.int64)
        self.labels = np.asarray([it["label"] for it in items], np.int64)
        self.skipped = SkipReport()
        for s in manifest.get("skipped", []):
            self.skipped.skip(s["item"], s["reason"])
        for s in manifest.get("converted", []):
            self.skipped.convert(s["item"], s["what"])
        self._readers: dict[int, Any] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_readers"] = {}
        return state

    def __len__(self) -> int:
        return len(self._ids)

    def id_of(self, index: int) -> str:
        return self._ids[index]

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        from array_record.python.array_record_module import ArrayRecordReader

        from jaxsynth.data.split import pixel_hash

        shard, pos = (int(v) for v in self._where[index])
        try:
            if shard not in self._readers:
                self._readers[shard] = ArrayRecordReader(str(self._shards[shard]))
            data = self._readers[shard].read([pos])[0]
        except Exception as e:  # noqa: BLE001 - a damaged shard
            raise CorruptImage(f"unreadable ArrayRecord shard ({_first_line(e)})") from None
        record = decode_record(data)
        if pixel_hash(record.image) != self._hashes[index]:
            raise CorruptImage("pixels do not match the manifest SHA-256")
        return dataclasses.replace(record, label=self.label_of(index)), []
