"""Stain protocols for the phantom: the SAME simulated tissue under two staining/scanning setups.

Why: stain protocol and scanner are the largest source of domain shift between hospitals, and
no real dataset shows one section stained twice. The phantom can: `render_tile(..., protocol=)`
keeps every random stream that draws the tissue (layout, nuclei, stroma, chromatin, pixel
noise) and changes only the optics -- the stain vectors (hue of haematoxylin and eosin), the
per-stain gains (staining time / dye concentration) and the lamp (background white level and
colour). So a tile and its protocol-B twin share the nuclei mask exactly and differ only in
colour: the paired ground truth that image-to-image models (CycleGAN stain translation, pix2pix
mask -> tile) are scored against.

Protocol A is the phantom's default rendering (bitwise unchanged). Protocol B uses Ruifrok &
Johnston's haematoxylin and eosin vectors (the magenta eosin that `skimage.color.rgb2hed`
assumes), stronger haematoxylin, weaker eosin and a dimmer, bluer lamp: a colour deconvolution
shows more H, less E and a shifted background (tests/test_i2i_data.py measures it).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


@dataclasses.dataclass(frozen=True, eq=False)
class StainProtocol:
    """The optics of one staining/scanning setup (tissue-independent).

    h_vec / e_vec: unit optical-density vectors (RGB) of haematoxylin and eosin; h_gain /
    e_gain: multiply each stain's optical density (on top of the per-tile random gain the
    phantom always draws); background: the lamp's RGB white level (before per-tile jitter).
    """

    name: str
    h_vec: np.ndarray
    e_vec: np.ndarray
    h_gain: float
    e_gain: float
    background: np.ndarray


# The phantom's own rendering (the same arithmetic as its former module constants).
PROTOCOL_A = StainProtocol(
    name="A",
    h_vec=_unit([0.60, 0.72, 0.35]),
    e_vec=_unit([0.13, 0.86, 0.45]),
    h_gain=1.0,
    e_gain=1.0,
    background=np.array([244.0, 242.0, 246.0]),
)

# A second lab: Ruifrok & Johnston vectors, over-stained haematoxylin, pale eosin, bluer lamp.
PROTOCOL_B = StainProtocol(
    name="B",
    h_vec=_unit([0.65, 0.70, 0.29]),
    e_vec=_unit([0.07, 0.99, 0.11]),
    h_gain=1.35,
    e_gain=0.5,
    background=np.array([228.0, 234.0, 250.0]),
)

PROTOCOLS = {"A": PROTOCOL_A, "B": PROTOCOL_B}


def get_protocol(name: str) -> StainProtocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown stain protocol '{name}' (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]


_ID = re.compile(r"^phantom/(-?\d+)/(\d+)$")


def parse_phantom_id(tile_id: str) -> tuple[int, int]:
    """`phantom/<seed>/<index>` -> (seed, index); anything else is not a phantom tile."""
    m = _ID.match(str(tile_id))
    if not m:
        raise ValueError(f"'{tile_id}' is not a phantom tile id (phantom/<seed>/<index>)")
    return int(m.group(1)), int(m.group(2))
