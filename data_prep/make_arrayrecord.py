"""Turn any jaxsynth source into ArrayRecord shards + manifest.json (`arrayrecord:<dir>`).

Why: decoding 100,000 TIFFs (and re-discovering the broken ones) on every run is slow; a prepared
dataset is decoded, checked, optionally resized once, and then read by random access from a few
shard files. The manifest lists every item (id, label, SHA-256 of its pixels as
`jaxsynth.data.split.pixel_hash` computes it, shard and position), the class names, and every
input that was skipped or converted, with the reason, so nothing is dropped silently.

Example:
    python data_prep/make_arrayrecord.py --source folder:/data/NCT-CRC-HE-100K \
        --classes NORM:normal TUM:tumour --resize 64 --out /data/nct64
    jaxsynth data inspect --source arrayrecord:/data/nct64
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import time
from pathlib import Path

from jaxsynth.data.sources import (
    ARRAYRECORD_FORMAT,
    encode_record,
    load_with_conversions,
    open_source,
    parse_options,
)
from jaxsynth.data.split import pixel_hash, resize_mask, resize_tile
from jaxsynth.data.types import CorruptImage, Record, SkipReport
from jaxsynth.errors import UserError


def make_arrayrecord(
    source,
    out: Path,
    *,
    resize: int | None = None,
    records_per_shard: int = 4096,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write `source` to `<out>/shard-XXXXX.array_record` + `<out>/manifest.json`; return it.

    The folder is written under a temporary name and renamed at the end, so an interrupted run
    never leaves a dataset that looks complete.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: output folder exists and is not empty (use --overwrite)")
    if records_per_shard < 1:
        raise UserError("--records-per-shard must be >= 1")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    report = SkipReport()
    if getattr(source, "skipped", None) is not None:
        report.merge(source.skipped)
    items, shards = [], []
    writer = None
    counts: collections.Counter = collections.Counter()
    start = last = time.monotonic()
    n = len(source)
    for i in range(n):
        try:
            record, conversions = load_with_conversions(source, i)
        except CorruptImage as e:
            report.skip(source.id_of(i), str(e))
            continue
        for what in conversions:
            report.convert(record.id, what)
        if resize is not None:
            mask = None if record.mask is None else resize_mask(record.mask, resize)
            record = Record(resize_tile(record.image, resize), record.label, record.id, mask)
        if writer is None or shards[-1]["num_records"] == records_per_shard:
            if writer is not None:
                writer.close()
            name = f"shard-{len(shards):05d}.array_record"
            writer = ArrayRecordWriter(str(tmp / name), "group_size:1")
            shards.append({"file": name, "num_records": 0})
        writer.write(encode_record(record))
        items.append(
            {
                "id": record.id,
                "label": int(record.label),
                "sha256": pixel_hash(record.image),
                "shard": len(shards) - 1,
                "index": shards[-1]["num_records"],
            }
        )
        shards[-1]["num_records"] += 1
        counts[source.class_names[record.label]] += 1
        now = time.monotonic()
        if progress and (now - last > 2.0 or i + 1 == n):
            rate = (i + 1) / max(now - start, 1e-9)
            print(
                f"make_arrayrecord: {i + 1}/{n} items, {rate:.0f}/s, "
                f"ETA {(n - i - 1) / max(rate, 1e-9):.0f}s, {len(report)} skipped",
                file=sys.stderr,
                flush=True,
            )
            last = now
    if writer is not None:
        writer.close()
    if not items:
        shutil.rmtree(tmp)
        raise UserError(f"{source.name}: no usable images ({len(report)} skipped)")
    summary = report.summary()
    manifest = {
        "format": ARRAYRECORD_FORMAT,
        "source": source.name,
        "class_names": list(source.class_names),
        "has_masks": bool(source.has_masks),
        "image_size": resize,
        "hash": "sha256 of str(shape) + pixel bytes (jaxsynth.data.split.pixel_hash)",
        "counts": {c: int(counts[c]) for c in source.class_names},
        "shards": shards,
        "items": items,
        "skipped": summary["skipped_items"],
        "converted": summary["converted_items"],
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="source spec, e.g. folder:/data/nct")
    parser.add_argument("--out", required=True, help="output folder for shards + manifest.json")
    parser.add_argument("--classes", nargs="+", metavar="CLASS[:NAME]", help="classes to keep")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="source option"
    )
    parser.add_argument("--resize", type=int, default=None, help="resize tiles to N x N px")
    parser.add_argument("--records-per-shard", type=int, default=4096)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        options = parse_options(args.option)
        if args.classes:
            options["classes"] = args.classes
        if args.resize is not None and not 8 <= args.resize <= 4096:
            raise UserError(f"--resize must be between 8 and 4096, got {args.resize}")
        source = open_source(args.source, options)
        manifest = make_arrayrecord(
            source,
            Path(args.out),
            resize=args.resize,
            records_per_shard=args.records_per_shard,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    except UserError as e:
        print(f"make_arrayrecord: error: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "out": args.out,
                "items": len(manifest["items"]),
                "counts": manifest["counts"],
                "shards": len(manifest["shards"]),
                "skipped": len(manifest["skipped"]),
                "converted": len(manifest["converted"]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
