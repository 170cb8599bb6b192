"""The one interface every image source implements, and the skip report for bad inputs.

A source is a random-access collection of labelled RGB tiles. Cheap metadata (`label_of`,
`id_of`) is separate from decoding (`load`) so that a study split can be drawn, stratified by
class, without decoding a 100,000-image dataset. `load` raises `CorruptImage` for an input that
cannot be used; callers record it in a `SkipReport` and carry on (never a crash mid-run).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Protocol, runtime_checkable

import numpy as np


class CorruptImage(Exception):
    """An input file/record that cannot be used; the message is the reason (one line)."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One tile: `image` uint8 (H, W, 3); `mask` uint8 (H, W) nuclei mask (1 = nucleus) or None."""

    image: np.ndarray
    label: int
    id: str
    mask: np.ndarray | None = None


@runtime_checkable
class ImageSource(Protocol):
    """Random-access labelled tiles. Ids are stable across runs and unique within a source."""

    name: str  # the spec it was opened from, e.g. "phantom" or "folder:/data/nct"
    class_names: tuple[str, ...]  # label i is class_names[i]
    has_masks: bool

    def __len__(self) -> int: ...

    def label_of(self, index: int) -> int: ...

    def id_of(self, index: int) -> str: ...

    def load(self, index: int) -> Record:
        """Decode tile `index` as uint8 RGB HWC; raise CorruptImage(reason) if unusable."""
        ...


class SkipReport:
    """Counts and lists every input that was skipped or converted, with the reason."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []
        self.converted: list[tuple[str, str]] = []

    def skip(self, item: str, reason: str) -> None:
        self.skipped.append((item, reason))

    def convert(self, item: str, what: str) -> None:
        self.converted.append((item, what))

    def __len__(self) -> int:
        return len(self.skipped)

    def summary(self) -> dict:
        by_reason = collections.Counter(r for _, r in self.skipped)
        return {
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(by_reason),
            "skipped_items": [{"item": i, "reason": r} for i, r in self.skipped],
            "converted": len(self.converted),
            "converted_items": [{"item": i, "what": w} for i, w in self.converted],
        }

    def merge(self, other: SkipReport) -> None:
        self.skipped += other.skipped
        self.converted += other.converted


def pixel_hash(image: np.ndarray) -> str:
    """SHA-256 of a uint8 image's shape and bytes: the identity used by the leakage guard."""
    a = np.ascontiguousarray(image, dtype=np.uint8)
    h = hashlib.sha256(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()
