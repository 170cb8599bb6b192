"""`folder:<root>`: `<root>/<CLASS>/<image files>` (the NCT-CRC-HE-100K layout), optional masks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxsynth.data.imageio import decode_image, decode_mask, skipped_entries
from jaxsynth.data.sources.base import (
    _existing_dir,
    _LabelledSource,
    _visible_files,
)
from jaxsynth.data.types import CorruptImage, Record, SkipReport
from jaxsynth.errors import UserError


class FolderSource(_LabelledSource):
    """`<root>/<CLASS>/<image>`: one subfolder per class (NCT-CRC-HE-100K layout).

    Ids are `<CLASS>/<file name>` with the native folder name, stable across runs. Every
    non-hidden file in a class folder is an item (a stray .txt is reported as "not an image"
    rather than silently ignored); subfolders inside a class folder are ignored.
    """

    has_masks = False

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        classes: list[tuple[str, str]] | None = None,
        expected_size: int | Sequence[int] | None = None,
        mask_root: str | os.PathLike | None = None,
    ):
        self.root = _existing_dir(root, "image folder root")
        self.name = f"folder:{root}"
        self.expected_size = expected_size
        self.skipped = SkipReport()
        if classes is None:
            found = sorted(
                p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
            if not found:
                raise UserError(
                    f"{self.root}: no class subfolders (expected <root>/<CLASS>/<image files>)"
                )
            classes = [(c, c) for c in found]
        self.class_names = tuple(new for _, new in classes)
        self.native_classes = tuple(n for n, _ in classes)
        self.mask_root = None if mask_root is None else _existing_dir(mask_root, "mask root")
        self.has_masks = self.mask_root is not None
        paths: list[Path] = []
        masks: list[Path | None] = []
        labels: list[int] = []
        for label, (native, _) in enumerate(classes):
            class_dir = self.root / native
            if not class_dir.is_dir():
                available = sorted(p.name for p in self.root.iterdir() if p.is_dir())
                raise UserError(
                    f"{class_dir}: class folder '{native}' does not exist "
                    f"(found: {', '.join(available) or 'none'})"
                )
            files = _visible_files(class_dir)
            for name, why in skipped_entries(class_dir):  # FIFOs, symlink loops: listed
                self.skipped.skip(f"{native}/{name}", why)
            if not files:
                raise UserError(f"{class_dir}: class folder '{native}' is empty")
            mask_by_stem = self._mask_index(native)
            for f in files:
                mask = None
                if self.has_masks:
                    mask = mask_by_stem.get(f.stem)
                    if mask is None:
                        self.skipped.skip(f"{native}/{f.name}", "no mask file in mask_root")
                        continue
                paths.append(f)
                masks.append(mask)
                labels.append(label)
        self._paths = paths
        self._masks = masks
        self.labels = np.asarray(labels, np.int64)

    def _mask_index(self, native: str) -> dict[str, Path]:
        if self.mask_root is None:
            return {}
        mask_dir = self.mask_root / native
        if not mask_dir.is_dir():
            raise UserError(f"{mask_dir}: mask folder for class '{native}' does not exist")
        return {p.stem: p for p in _visible_files(mask_dir)}

    def __len__(self) -> int:
        return len(self._paths)

    def id_of(self, index: int) -> str:
        p = self._paths[index]
        return f"{p.parent.name}/{p.name}"

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        name = self.id_of(index)
        image, conversions = decode_image(
            self._paths[index], name=name, expected_size=self.expected_size
        )
        mask = None
        if self.has_masks:
            try:
                mask = decode_mask(self._masks[index], name=name)
            except CorruptImage as e:
                raise CorruptImage(f"mask: {e}") from None
            if mask.shape != image.shape[:2]:
                raise CorruptImage("mask size differs from image size")
        return Record(image=image, label=self.label_of(index), id=name, mask=mask), conversions
