"""`jaxsynth sample` for the image-to-image models (called from commands/sample.py):

    jaxsynth sample --workdir runs/pix2pix --masks masks/ --label tumour --out out/
    jaxsynth sample --workdir runs/cyclegan --input tiles/ [--direction ba] --out out/

pix2pix draws one tile per mask file; CycleGAN translates each input tile (A -> B by default).
Unlike the DDPM's `--masks` (resized to fit), inputs here must already be the model's size:
a translation model is defined at one resolution, and a silently resized mask no longer shows
the nuclei sizes the user drew. Every bad file is a one-line UserError naming it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from jaxsynth.errors import UserError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".npy")
CHUNK = 64


def _files(directory: str | Path, flag: str) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{flag} {d}: not a directory")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{flag} {d}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _read(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as e:  # noqa: BLE001 - any decoding failure is the user's file
        raise UserError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def _check_size(path: Path, arr: np.ndarray, size: int) -> None:
    if arr.ndim < 2 or arr.shape[:2] != (size, size):
        shape = "x".join(str(s) for s in arr.shape[:2])
        raise UserError(f"{path}: is {shape} pixels, the model works at {size}x{size}")


def load_binary_masks(directory: str | Path, size: int) -> tuple[np.ndarray, list[str]]:
    """Mask files -> (float32 {0,1} (N, S, S, 1), names). A mask is 2-D (or RGB with equal
    channels), exactly S×S, with values in {0, 1} or {0, 255} (non-zero = nucleus)."""
    out, files = [], _files(directory, "--masks")
    for p in files:
        arr = _read(p)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and np.all(arr[..., :3] == arr[..., :1]):
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise UserError(f"{p}: a mask must be single-channel, got shape {arr.shape}")
        _check_size(p, arr, size)
        values = set(np.unique(arr).tolist())
        if not (values <= {0, 1} or values <= {0, 255} or arr.dtype == bool):
            shown = sorted(values)[:5]
            raise UserError(
                f"{p}: mask is not binary (values {shown}...; use 0 and 1 or 0 and 255)"
            )
        out.append(arr > 0)
    return np.stack(out).astype(np.float32)[..., None], [p.name for p in files]


def load_input_tiles(directory: str | Path, size: int) -> tuple[np.ndarray, list[str]]:
    """RGB tile files -> (uint8 (N, S, S, 3), names): exactly S×S, exactly 3 channels."""
    out, files = [], _files(directory, "--input")
    for p in files:
        arr = _read(p)
        channels = 1 if arr.ndim == 2 else arr.shape[-1]
        if arr.ndim not in (2, 3) or channels != 3:
            raise UserError(f"{p}: has {channels} channel(s), an H&E tile needs 3 channels (RGB)")
        _check_size(p, arr, size)
        if arr.dtype != np.uint8:
            raise UserError(f"{p}: expected 8-bit RGB, got {arr.dtype}")
        out.append(arr)
    return np.stack(out), [p.name for p in files]


def _label_index(config, task, label: str | None) -> int | None:
    classes = tuple(config.data.classes)
    if not task.conditional:
        if label is not None:
            raise UserError(f"--label {label}: this pix2pix model is not class-conditional")
        return None
    if label is None:
        raise UserError(
            f"--label is required for a class-conditional pix2pix ({', '.join(classes)})"
        )
    if label not in classes:
        raise UserError(f"--label {label}: unknown class (classes: {', '.join(classes)})")
    return classes.index(label)


def run_i2i(args: argparse.Namespace, task, state, config, step: int) -> int:
    """Translate every file of --masks (pix2pix) or --input (CycleGAN); write PNGs + sidecars."""
    import jax
    import jax.numpy as jnp

    from jaxsynth.config import config_hash
    from jaxsynth.train.visuals import save_png, to_uint8

    size = int(config.image_size)
    sidecar: dict = {"model": task.name, "step": int(step), "seed": int(args.seed)}
    if task.name == "pix2pix":
        if not args.masks or args.input:
            raise UserError("pix2pix translates masks: give --masks DIR (not --input)")
        inputs, names = load_binary_masks(args.masks, size)
        idx = _label_index(config, task, args.label)
        fn = jax.jit(
            lambda st, x, lab, key: task.translate(st, x, lab if task.conditional else None, key)
        )
        sidecar["label"] = args.label
    else:
        if not args.input or args.masks:
            raise UserError(f"{task.name} translates tiles: give --input DIR (not --masks)")
        tiles, names = load_input_tiles(args.input, size)
        inputs = tiles.astype(np.float32) / 127.5 - 1.0
        direction = args.direction or "ab"
        fn = jax.jit(lambda st, x, lab, key: task.translate(st, x, direction))
        sidecar["direction"] = direction
        idx = None
    num = len(inputs) if args.num is None else min(int(args.num), len(inputs))
    if num <= 0:
        raise UserError(f"--num {args.num}: must be a positive number of images")
    base = jax.random.PRNGKey(args.seed)
    images = []
    for i, start in enumerate(range(0, num, CHUNK)):
        x = inputs[start : start + CHUNK][: num - start]
        lab = None if idx is None else jnp.full((len(x),), idx, jnp.int32)
        images.append(
            to_uint8(np.asarray(fn(state, jnp.asarray(x), lab, jax.random.fold_in(base, i))))
        )
        print(f"translated {start + len(x)}/{num}", flush=True)
    images = np.concatenate(images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        save_png(img, out / f"sample_{i:05d}.png")
    labels = np.full(num, -1 if idx is None else idx, np.int32)
    np.savez_compressed(out / "samples.npz", images=images, labels=labels)
    if task.name == "pix2pix":
        from jaxsynth.diffusion.segmentation import mask_guided_iou

        scores = mask_guided_iou(images, inputs[:num])
        sidecar.update({k: float(scores[k]) for k in ("iou", "iou_shuffled")})
    sidecar.update(
        {
            "num": int(num),
            "inputs": names[:num],
            "config_hash": config_hash(config),
            "workdir": str(Path(args.workdir).resolve()),
            "params": "ema",
        }
    )
    (out / "samples.json").write_text(json.dumps(sidecar, indent=2))
    print(f"wrote {num} PNGs, samples.npz and samples.json to {out}")
    return 0
