"""What the readers share: class selection and renaming, native splits, option flattening,
path checks. Each reader is its own module; `jaxsynth.data.sources` opens them by spec.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxsynth.data.types import ImageSource, Record, SkipReport
from jaxsynth.errors import UserError

PCAM_CLASSES = ("normal", "tumour")  # PCam label 1 = tumour tissue in the centre 32x32
PCAM_SPLITS = ("train", "valid", "test")
PCAM_SIZE = 96
ARRAYRECORD_FORMAT = "jaxsynth-arrayrecord-v1"


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_with_conversions(source: ImageSource, index: int) -> tuple[Record, list[str]]:
    """`source.load(index)` plus the lossless conversions that were applied to the pixels."""
    fn = getattr(source, "load_with_conversions", None)
    if fn is not None:
        return fn(index)
    return source.load(index), []
