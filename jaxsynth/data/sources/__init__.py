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

import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jaxsynth.data.sources.arrayrecord import ArrayRecordSource, decode_record, encode_record
from jaxsynth.data.sources.base import (
    ARRAYRECORD_FORMAT,
    _flatten,
    _select_classes,
    _splits,
    load_with_conversions,
)
from jaxsynth.data.sources.folder import FolderSource
from jaxsynth.data.sources.kaggle_pcam import KagglePCamSource
from jaxsynth.data.sources.pcam_h5 import PCamH5Source
from jaxsynth.data.sources.phantom import open_phantom
from jaxsynth.data.sources.tfds import TfdsSource
from jaxsynth.data.types import CorruptImage, ImageSource, Record, SkipReport
from jaxsynth.errors import UserError

__all__ = [
    "ARRAYRECORD_FORMAT",
    "ArrayRecordSource",
    "FolderSource",
    "KagglePCamSource",
    "PCamH5Source",
    "READERS",
    "TfdsSource",
    "decode_record",
    "encode_record",
    "load_with_conversions",
    "open_source",
    "parse_classes",
    "parse_options",
    "scan",
]

# The registry: `kind` of a `kind:<path>` spec -> opener(path, flat options). A new reader is a
# module in this package plus one line here.
READERS: dict[str, Callable[[str, Mapping], Any]] = {
    "phantom": lambda rest, opts: open_phantom(opts),
    "pcam_h5": lambda rest, opts: PCamH5Source(
        rest, splits=_splits(opts), cache_dir=opts.get("cache_dir")
    ),
    "kaggle_pcam": lambda rest, opts: KagglePCamSource(rest),
    "folder": lambda rest, opts: FolderSource(
        rest,
        classes=parse_classes(opts.get("classes")),
        expected_size=opts.get("expected_size"),
        mask_root=opts.get("mask_root"),
    ),
    "tfds": lambda rest, opts: TfdsSource(rest, splits=_splits(opts)),
    "arrayrecord": lambda rest, opts: ArrayRecordSource(rest),
}
SOURCE_KINDS = tuple(READERS)


def open_source(spec: str, options: Mapping | None = None) -> ImageSource:
    """Open the source named by `spec` (see the module docstring) with `options`."""
    opts = _flatten(options or {})
    spec = str(spec).strip()
    kind, _, rest = spec.partition(":")
    if kind not in READERS:
        raise UserError(
            f"data.source: unknown source '{spec}' (expected one of: phantom, pcam_h5:<dir>, "
            "kaggle_pcam:<dir>, folder:<root>, tfds:<name>@<data_dir>, arrayrecord:<dir>)"
        )
    if kind != "phantom" and not rest:
        raise UserError(f"data.source: '{spec}' names no path (write {kind}:<path>)")
    source = READERS[kind](rest, opts)
    if kind == "folder":  # the folder reader selects (and orders) its classes itself
        return source
    return _select_classes(source, parse_classes(opts.get("classes")))


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
