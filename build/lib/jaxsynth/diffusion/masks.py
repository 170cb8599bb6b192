"""Loading nuclei masks for mask-guided sampling (`jaxsynth sample --masks DIR`).

A mask file is a single-channel (or RGB, any channel > 0) image: PNG, TIFF, or a `.npy` array;
nonzero pixels are nuclei. Masks are resized to the model's resolution with nearest neighbour so
they stay binary. Any unreadable file or wrong shape is a one-line UserError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from jaxsynth.errors import UserError

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".bmp")


def load_mask(path: Path, image_size: int) -> np.ndarray:
    """One mask file -> bool (image_size, image_size)."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with Image.open(path) as im:
                arr = np.asarray(im)
    except Exception as e:  # noqa: BLE001 - any decoding failure is the user's file
        raise UserError(f"{path}: cannot read mask ({type(e).__name__}: {e})") from None
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise UserError(f"{path}: a mask must be a 2-D image, got shape {arr.shape}")
    mask = arr > 0
    if mask.shape != (image_size, image_size):
        img = Image.fromarray(mask.astype(np.uint8) * 255)
        mask = np.asarray(img.resize((image_size, image_size), Image.NEAREST)) > 0
    return mask


def load_masks(directory: str | Path, image_size: int) -> tuple[np.ndarray, list[str]]:
    """All mask files of `directory` (sorted by name) -> (float32 {0,1} (N, S, S, 1), names)."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"--masks {d}: not a directory")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in MASK_SUFFIXES)
    if not files:
        raise UserError(f"--masks {d}: no mask files ({', '.join(MASK_SUFFIXES)})")
    masks = np.stack([load_mask(p, image_size) for p in files]).astype(np.float32)[..., None]
    return masks, [p.name for p in files]
