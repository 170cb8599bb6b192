"""`jaxsynth data inspect|preview`: look at a dataset before training on it.

`inspect` decodes every item (or an evenly spread `--limit`) and prints ONE JSON object: classes,
counts per class (and per native split), image sizes, masks, and every skipped or converted file
with its reason, so a folder full of half-copied files is noticed before a run, not during it.
`preview` writes a labelled grid PNG (one row per class) to eyeball what the labels mean.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

from jaxsynth.data.sources import load_with_conversions, open_source, parse_options, scan
from jaxsynth.data.types import CorruptImage, Record
from jaxsynth.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect or preview a dataset source")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--source",
            required=True,
            help="phantom | folder:<root> | pcam_h5:<dir> | kaggle_pcam:<dir> | "
            "tfds:<name>@<data_dir> | arrayrecord:<dir>",
        )
        p.add_argument(
            "--classes",
            nargs="+",
            metavar="CLASS[:NAME]",
            help="classes to use, in label order, optionally renamed (e.g. NORM:normal TUM:tumour)",
        )
        p.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="source option, e.g. splits=train, cache_dir=/tmp/c, phantom.num_per_class=100",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")

    inspect_p = sub.add_parser("inspect", help="print a JSON summary of a source")
    common(inspect_p)
    inspect_p.add_argument(
        "--limit", type=int, default=None, help="decode at most N items, spread evenly"
    )
    inspect_p.set_defaults(func=run_inspect, takes_config=False)

    preview_p = sub.add_parser("preview", help="write a labelled sample grid PNG")
    common(preview_p)
    preview_p.add_argument("--out", required=True, help="output PNG path")
    preview_p.add_argument("--per-class", type=int, default=8, help="tiles per class (row)")
    preview_p.add_argument("--seed", type=int, default=0, help="which tiles are drawn")
    preview_p.add_argument("--tile-size", type=int, default=96, help="tile side in the grid, px")
    preview_p.set_defaults(func=run_preview, takes_config=False)


def _open(args: argparse.Namespace):
    options = parse_options(args.option)
    if args.classes:
        options["classes"] = [c for part in args.classes for c in part.split(",") if c]
    return open_source(args.source, options)


def inspect_summary(source, *, limit: int | None = None, progress: bool = True) -> dict:
    """The JSON-able summary `jaxsynth data inspect` prints (see the module docstring)."""
    n = len(source)
    names = list(source.class_names)
    labels = np.fromiter((source.label_of(i) for i in range(n)), np.int64, n)
    counts = {c: int(np.sum(labels == k)) for k, c in enumerate(names)}
    summary: dict = {
        "source": source.name,
        "class_names": names,
        "num_items": n,
        "counts": counts,
    }
    split_of = getattr(source, "split_of", None)
    if split_of is not None:
        by_split: dict[str, dict[str, int]] = {
            s: dict.fromkeys(names, 0) for s in getattr(source, "native_splits", ())
        }
        for i in range(n):
            by_split.setdefault(split_of(i), dict.fromkeys(names, 0))[names[labels[i]]] += 1
        summary["counts_by_split"] = by_split
    if limit is not None and limit < n:
        indices = sorted(set(np.linspace(0, n - 1, max(limit, 0)).round().astype(int).tolist()))
    else:
        indices = list(range(n))
    sizes: collections.Counter = collections.Counter()
    usable: collections.Counter = collections.Counter()
    masks_seen = [0]

    def on_record(i: int, record: Record) -> None:
        h, w = record.image.shape[:2]
        sizes[f"{w}x{h}"] += 1
        usable[names[labels[i]]] += 1
        masks_seen[0] += record.mask is not None

    _, report = scan(source, progress=progress, indices=indices, on_record=on_record)
    report_summary = report.summary()
    summary.update(
        {
            "scanned": len(indices),
            "limit": limit,
            "usable": {c: int(usable[c]) for c in names},
            "image_sizes_wxh": dict(sizes.most_common()),
            "has_masks": bool(source.has_masks),
            "masks_seen": masks_seen[0],
            "skipped": report_summary["skipped"],
            "skipped_by_reason": report_summary["skipped_by_reason"],
            "skipped_items": report_summary["skipped_items"],
            "converted": report_summary["converted"],  # conversions (a file may have two)
            "converted_files": len({item for item, _ in report.converted}),
            "converted_by_what": dict(collections.Counter(w for _, w in report.converted)),
            "converted_items": report_summary["converted_items"],
        }
    )
    return summary


def run_inspect(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    source = _open(args)
    summary = inspect_summary(source, limit=args.limit, progress=not args.no_progress)
    print(json.dumps(summary, indent=1))
    return 0


def sample_per_class(source, per_class: int, seed: int) -> tuple[list[list[Record]], list[str]]:
    """Up to `per_class` decodable records per class (seeded), and the ids that failed to load."""
    rng = np.random.default_rng(seed)
    n = len(source)
    labels = np.fromiter((source.label_of(i) for i in range(n)), np.int64, n)
    rows: list[list[Record]] = []
    failed: list[str] = []
    for k in range(len(source.class_names)):
        row: list[Record] = []
        for i in rng.permutation(np.flatnonzero(labels == k)):
            if len(row) == per_class:
                break
            try:
                row.append(load_with_conversions(source, int(i))[0])
            except CorruptImage as e:
                failed.append(f"{source.id_of(int(i))}: {e}")
        rows.append(row)
    return rows, failed


def render_grid(rows: list[list[Record]], class_names: list[str], tile: int) -> np.ndarray:
    """uint8 RGB grid: a label column with the class name, then one row of tiles per class."""
    from PIL import Image, ImageDraw, ImageFont

    from jaxsynth.data.split import resize_tile

    font = ImageFont.load_default()
    pad = 4
    label_w = max(font.getbbox(c)[2] for c in class_names) + 2 * pad
    cols = max((len(r) for r in rows), default=1) or 1
    width = label_w + cols * (tile + pad) + pad
    height = len(rows) * (tile + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, name) in enumerate(zip(rows, class_names)):
        y = pad + r * (tile + pad)
        draw.text((pad, y + tile // 2 - 6), name, fill="black", font=font)
        for c, record in enumerate(row):
            x = label_w + c * (tile + pad)
            canvas.paste(Image.fromarray(resize_tile(record.image, tile)), (x, y))
    return np.asarray(canvas)


def run_preview(args: argparse.Namespace) -> int:
    from PIL import Image

    if args.per_class < 1 or args.tile_size < 8:
        raise UserError("--per-class must be >= 1 and --tile-size >= 8")
    out = Path(args.out)
    if not out.parent.exists():
        raise UserError(f"{out.parent}: output folder does not exist")
    source = _open(args)
    rows, failed = sample_per_class(source, args.per_class, args.seed)
    grid = render_grid(rows, list(source.class_names), args.tile_size)
    Image.fromarray(grid).save(out)
    for line in failed:
        print(f"preview: skipped {line}", file=sys.stderr)
    shown = {c: len(r) for c, r in zip(source.class_names, rows)}
    print(json.dumps({"out": str(out), "shown": shown, "skipped": len(failed)}))
    return 0
