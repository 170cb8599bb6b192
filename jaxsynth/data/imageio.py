"""Decode one image file into uint8 RGB, or say precisely why it cannot be used.

Real histology folders contain zero-byte files from interrupted copies, truncated downloads,
stray non-images, grayscale scans, RGBA exports and 16-bit TIFFs. Training must neither crash on
them nor silently learn from garbage, so `decode_image` either returns a uint8 (H, W, 3) array plus
the list of conversions it applied, or raises `CorruptImage` with a one-line reason that a
`SkipReport` can count.

Conversion policy (only lossless, obvious ones; every conversion is reported):
- grayscale (L, 1-bit) -> RGB by replicating the channel;
- palette (P) -> RGB through the palette;
- RGBA / LA whose alpha is fully opaque everywhere -> alpha dropped; any transparent pixel ->
  skipped as "has transparency" (what the tissue looks like under it is unknown);
- 16-bit -> 8-bit by keeping the high byte (`v >> 8`). This is exact for 16-bit files that were
  expanded from 8-bit data (v = 257 * u gives back u), uses 256 equal-width bins otherwise, and is
  what PIL itself does for 16-bit RGB TIFF/PNG, so the result does not depend on which decoder read
  the file.
Not converted (skipped as unsupported): CMYK/YCbCr/LAB, 32-bit or floating-point pixels,
multi-page files (which page would be the tile is not obvious).

PIL decodes lazily, so the full pixel data is forced (`load()`, plus `verify()` for PNG, which
catches a missing end chunk) to turn truncation into an error here rather than mid-training.
TIFF goes through PIL; files PIL cannot open or that carry more than 8 bits per sample go through
tifffile.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from jaxsynth.data.types import CorruptImage

__all__ = ["CorruptImage", "decode_image", "decode_mask", "sniff_format", "size_reason"]

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def sniff_format(head: bytes) -> str | None:
    """The container format from the first bytes (not the extension), or None if unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] in _TIFF_MAGICS:
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def size_reason(image: np.ndarray, expected: int | Sequence[int] | None) -> str | None:
    """The skip reason if `image` is not `expected` (side or (height, width)); None if it fits."""
    if expected is None:
        return None
    eh, ew = (expected, expected) if isinstance(expected, int) else tuple(expected)
    h, w = image.shape[:2]
    if (h, w) != (eh, ew):
        return f"wrong size {w}x{h} (WxH), expected {ew}x{eh}"
    return None


def decode_image(
    path_or_bytes: str | os.PathLike | bytes,
    *,
    name: str,
    expected_size: int | Sequence[int] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Decode to a contiguous uint8 (H, W, 3) RGB array and the conversions applied.

    `name` is only used in messages. `expected_size` (side or (height, width)) rejects tiles of
    another size for sources whose tiles have a fixed size (PCam 96); None accepts any size.
    Raises CorruptImage(reason) for anything unusable.
    """
    data = _read_bytes(path_or_bytes, name)
    if len(data) == 0:
        raise CorruptImage("zero-byte file")
    fmt = sniff_format(data[:16])
    array, conversions = _decode_array(data, fmt)
    rgb = _to_rgb(array, conversions)
    reason = size_reason(rgb, expected_size)
    if reason:
        raise CorruptImage(reason)
    return np.ascontiguousarray(rgb, dtype=np.uint8), conversions


def decode_mask(path_or_bytes: str | os.PathLike | bytes, *, name: str) -> np.ndarray:
    """Decode a mask image to uint8 (H, W) with 1 where the mask is non-zero (any channel)."""
    data = _read_bytes(path_or_bytes, name)
    if len(data) == 0:
        raise CorruptImage("zero-byte mask file")
    array, _ = _decode_array(data, sniff_format(data[:16]))
    if array.ndim == 3:
        array = array[..., :3].max(axis=-1) if array.shape[-1] != 2 else array[..., 0]
    return (array > 0).astype(np.uint8)


def _read_bytes(path_or_bytes: str | os.PathLike | bytes, name: str) -> bytes:
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        return bytes(path_or_bytes)
    try:
        return Path(path_or_bytes).read_bytes()
    except FileNotFoundError as e:
        raise CorruptImage("file disappeared after listing") from e
    except IsADirectoryError as e:
        raise CorruptImage("is a directory, not an image file") from e
    except OSError as e:
        raise CorruptImage(f"unreadable file ({e.strerror or e})") from e


def _decode_array(data: bytes, fmt: str | None) -> tuple[np.ndarray, list[str]]:
    """Raw decoded pixels (any dtype/channels, one page) and the conversions done on the way."""
    conversions: list[str] = []
    if fmt == "TIFF" and _tiff_needs_tifffile(data):
        return _decode_with_tifffile(data), conversions
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on corrupt EXIF etc.; we raise instead
            image = Image.open(io.BytesIO(data))
            if getattr(image, "n_frames", 1) > 1:
                raise CorruptImage(
                    f"unsupported: multi-page {image.format} ({image.n_frames} pages)"
                )
            image.load()  # PIL is lazy: force the full decode so truncation is caught here
            if image.format == "PNG":
                Image.open(io.BytesIO(data)).verify()  # checks CRCs and the end chunk
    except CorruptImage:
        raise
    except Image.DecompressionBombError as e:
        raise CorruptImage("unsupported: image too large to decode safely") from e
    except Exception as e:  # noqa: BLE001 - every PIL failure becomes a skip reason
        if fmt == "TIFF":
            return _decode_with_tifffile(data), conversions
        if fmt is None:
            raise CorruptImage("not an image (unrecognised file format)") from e
        raise CorruptImage(f"truncated or corrupt {fmt} data") from e
    image = _apply_exif_orientation(image, conversions)
    return _pil_to_array(image, conversions), conversions


def _apply_exif_orientation(image: Image.Image, conversions: list[str]) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says (what every viewer shows), and report it:
    a phone or scanner export stored sideways is otherwise silently a different image."""
    try:
        orientation = int(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF: pixels as stored
        return image
    if orientation == 1:
        return image
    from PIL import ImageOps

    if orientation not in range(2, 9):
        conversions.append(f"EXIF orientation {orientation} is invalid: ignored")
        return image
    conversions.append(f"EXIF orientation {orientation} applied")
    return ImageOps.exif_transpose(image)


def skipped_entries(directory: Path) -> list[tuple[str, str]]:
    """(name, reason) of every non-hidden entry of `directory` that is neither a regular file
    nor a folder: FIFOs, sockets, devices, broken links and symlink loops. Listing them as
    skipped keeps the counts honest (they used to vanish from them without a word)."""
    out = []
    for p in sorted(directory.iterdir()):
        if p.name.startswith("."):
            continue
        try:
            st = p.stat()  # follows links: raises for broken links and loops
        except OSError as e:
            loop = e.errno == errno.ELOOP
            out.append((p.name, "symlink loop" if loop else "broken symlink"))
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            kind = "FIFO" if stat.S_ISFIFO(st.st_mode) else "special file"
            out.append((p.name, f"not a regular file ({kind})"))
    return out


def _pil_to_array(image: Image.Image, conversions: list[str]) -> np.ndarray:
    mode = image.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        conversions.append("palette -> RGB")
    elif mode == "1":
        image = image.convert("L")
        conversions.append("1-bit -> 8-bit")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        raise CorruptImage(f"unsupported: {mode} colour space")
    elif mode == "F":
        raise CorruptImage("unsupported: floating-point pixels")
    array = np.asarray(image)
    if mode == "I":  # 32-bit integer container; accept only if the values fit 16 bits
        if array.min() < 0 or array.max() > 65535:
            raise CorruptImage("unsupported: 32-bit integer pixels")
        array = array.astype(np.uint16)
    return array


def _tiff_needs_tifffile(data: bytes) -> bool:
    """True for TIFFs with more than 8 bits per sample (PIL would silently drop the low byte)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            bits = image.tag_v2.get(258, (8,))
    except Exception:  # noqa: BLE001 - PIL cannot even parse the header: let tifffile try
        return True
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits) > 8


def _decode_with_tifffile(data: bytes) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if len(tif.pages) > 1:
                raise CorruptImage(f"unsupported: multi-page TIFF ({len(tif.pages)} pages)")
            page = tif.pages[0]
            array = page.asarray()
            planar_separate = getattr(page, "planarconfig", 1) == 2
    except CorruptImage:
        raise
    except Exception as e:  # noqa: BLE001 - any tifffile failure is a corrupt file
        raise CorruptImage("truncated or corrupt TIFF data") from e
    if array.ndim == 3 and planar_separate and array.shape[0] in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)
    return array


def _to_rgb(array: np.ndarray, conversions: list[str]) -> np.ndarray:
    """Turn decoded pixels of any supported layout into uint8 (H, W, 3), recording conversions."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
        conversions.append("1-bit -> 8-bit")
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
        conversions.append("16-bit -> 8-bit (high byte)")
    elif array.dtype != np.uint8:
        kind = "floating-point" if array.dtype.kind == "f" else f"{array.dtype.itemsize * 8}-bit"
        raise CorruptImage(f"unsupported: {kind} pixels")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        conversions.append("grayscale -> RGB")
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (2, 3, 4):
        raise CorruptImage(f"unsupported: pixel array of shape {tuple(array.shape)}")
    channels = array.shape[-1]
    if channels in (2, 4):
        if np.any(array[..., -1] != 255):
            raise CorruptImage("has transparency")
        conversions.append(("gray+alpha" if channels == 2 else "RGBA") + " (opaque) -> RGB")
        array = array[..., :-1]
        if channels == 2:
            conversions.append("grayscale -> RGB")
            return np.repeat(array, 3, axis=-1)
    return array
