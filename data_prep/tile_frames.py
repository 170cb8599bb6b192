"""Tile large frames (MITOS-ATYPIA-style 1539x1376 images) into fixed-size patches.

Why: the models work on 64-256 px tiles, while mitosis/atypia datasets ship whole high-power
fields (and, where available, mask images of the same size). This cuts each frame into
`--size` x `--size` patches every `--stride` px (partial patches at the right/bottom edge are
dropped, never padded) and writes a `folder:` tree that `jaxsynth` reads directly:

    <out>/<CLASS>/<frame stem>_y<row>_x<col>.png            the image patches
    <mask-out>/<CLASS>/<frame stem>_y<row>_x<col>.png       mask patches (0/255), if --masks
    <out>/tiles_manifest.json                               frames, tiles, skipped frames

Read it back with `--source folder:<out>` and, for masks, the source option
`mask_root=<mask-out>`. The class of a frame comes from `--labels` (a CSV with columns
`frame,class`, frame = file name or stem) or is the single `--class`. Unreadable frames, frames
without a CSV row or a mask, and masks of another size are skipped and listed with the reason.

Example:
    python data_prep/tile_frames.py --frames /data/mitos/frames --masks /data/mitos/masks \
        --labels /data/mitos/frame_classes.csv --size 128 --stride 128 --out /data/mitos128
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jaxsynth.data.imageio import decode_image, decode_mask
from jaxsynth.data.types import CorruptImage, SkipReport
from jaxsynth.errors import UserError


def tile_positions(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left (y, x) of every full `size` patch at `stride`; edge remainders are dropped."""
    return [
        (y, x)
        for y in range(0, height - size + 1, stride)
        for x in range(0, width - size + 1, stride)
    ]


def read_frame_classes(path: Path) -> dict[str, str]:
    """`frame,class` CSV -> {frame stem: class}; a bad header is a one-line error."""
    if not path.is_file():
        raise UserError(f"{path}: labels CSV does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or []]
        if "frame" not in fields or "class" not in fields:
            raise UserError(f"{path}: expected columns 'frame,class', found {','.join(fields)}")
        reader.fieldnames = fields
        out = {}
        for row in reader:
            frame, cls = (row["frame"] or "").strip(), (row["class"] or "").strip()
            if frame and cls:
                out[Path(frame).stem] = cls
    return out


def tile_frames(
    frames_dir: Path,
    out: Path,
    *,
    size: int,
    stride: int,
    frame_classes: dict[str, str] | None = None,
    single_class: str | None = None,
    masks_dir: Path | None = None,
    mask_out: Path | None = None,
) -> dict:
    """Tile every frame in `frames_dir`; return the manifest (`<out>/tiles_manifest.json`)."""
    if size < 1 or stride < 1:
        raise UserError("--size and --stride must be >= 1")
    if not frames_dir.is_dir():
        raise UserError(f"{frames_dir}: frames folder does not exist")
    if masks_dir is not None and not masks_dir.is_dir():
        raise UserError(f"{masks_dir}: masks folder does not exist")
    frames = sorted(p for p in frames_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not frames:
        raise UserError(f"{frames_dir}: frames folder is empty")
    masks = {}
    if masks_dir is not None:
        masks = {p.stem: p for p in masks_dir.iterdir() if p.is_file()}
        mask_out = mask_out or out.with_name(out.name + "_masks")
    report = SkipReport()
    tiles_per_class: dict[str, int] = {}
    frames_used = []
    for frame in frames:
        cls = single_class if single_class is not None else frame_classes.get(frame.stem)
        if cls is None:
            report.skip(frame.name, "no row in labels CSV")
            continue
        try:
            image, conversions = decode_image(frame, name=frame.name)
        except CorruptImage as e:
            report.skip(frame.name, str(e))
            continue
        for what in conversions:
            report.convert(frame.name, what)
        mask = None
        if masks_dir is not None:
            if frame.stem not in masks:
                report.skip(frame.name, "no mask file")
                continue
            try:
                mask = decode_mask(masks[frame.stem], name=masks[frame.stem].name)
            except CorruptImage as e:
                report.skip(frame.name, f"mask: {e}")
                continue
            if mask.shape != image.shape[:2]:
                report.skip(frame.name, "mask size differs from frame size")
                continue
        positions = tile_positions(image.shape[0], image.shape[1], size, stride)
        if not positions:
            report.skip(frame.name, f"smaller than one {size}x{size} tile")
            continue
        (out / cls).mkdir(parents=True, exist_ok=True)
        if mask is not None:
            (mask_out / cls).mkdir(parents=True, exist_ok=True)
        for y, x in positions:
            name = f"{frame.stem}_y{y:05d}_x{x:05d}.png"
            Image.fromarray(image[y : y + size, x : x + size]).save(out / cls / name)
            if mask is not None:
                patch = (mask[y : y + size, x : x + size] * 255).astype(np.uint8)
                Image.fromarray(patch).save(mask_out / cls / name)
        tiles_per_class[cls] = tiles_per_class.get(cls, 0) + len(positions)
        frames_used.append({"frame": frame.name, "class": cls, "tiles": len(positions)})
    if not frames_used:
        raise UserError(f"{frames_dir}: no frame could be tiled ({len(report)} skipped)")
    summary = report.summary()
    manifest = {
        "size": size,
        "stride": stride,
        "tiles_per_class": tiles_per_class,
        "frames": frames_used,
        "mask_root": None if mask_out is None or masks_dir is None else str(mask_out),
        "skipped": summary["skipped_items"],
        "converted": summary["converted_items"],
    }
    (out / "tiles_manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", required=True, help="folder of frame images")
    parser.add_argument("--out", required=True, help="output root (folder: layout)")
    parser.add_argument("--size", type=int, default=128, help="patch side, px")
    parser.add_argument("--stride", type=int, default=None, help="step between patches (= size)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--labels", help="CSV with columns frame,class")
    group.add_argument("--class", dest="single_class", help="one class for every frame")
    parser.add_argument("--masks", help="folder of mask images named like the frames")
    parser.add_argument("--mask-out", help="output root for mask patches (<out>_masks)")
    args = parser.parse_args(argv)
    try:
        manifest = tile_frames(
            Path(args.frames),
            Path(args.out),
            size=args.size,
            stride=args.stride or args.size,
            frame_classes=read_frame_classes(Path(args.labels)) if args.labels else None,
            single_class=args.single_class,
            masks_dir=Path(args.masks) if args.masks else None,
            mask_out=Path(args.mask_out) if args.mask_out else None,
        )
    except UserError as e:
        print(f"tile_frames: error: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "out": args.out,
                "tiles_per_class": manifest["tiles_per_class"],
                "frames": len(manifest["frames"]),
                "skipped": len(manifest["skipped"]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
