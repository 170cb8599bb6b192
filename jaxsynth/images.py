"""The one home of the image scaling every model and metric shares.

Models see float32 images in [-1, 1] (NHWC); files, hashes and pixel metrics see uint8. Both
directions live here, in the base layer, so that eval, train and tasks agree on rounding without
importing each other.
"""

from __future__ import annotations

import numpy as np


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [-1, 1] -> uint8 [0, 255] (rounded, clipped)."""
    x = (np.asarray(images, np.float32) + 1.0) * 127.5
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1] (the scaling every jaxsynth model expects)."""
    return images_uint8.astype(np.float32) / 127.5 - 1.0
