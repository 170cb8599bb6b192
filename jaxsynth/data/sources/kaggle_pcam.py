"""`kaggle_pcam:<dir>`: Kaggle's PCam copy, `<dir>/train/<id>.tif` + `train_labels.csv`."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from jaxsynth.data.imageio import decode_image
from jaxsynth.data.sources.base import (
    PCAM_CLASSES,
    PCAM_SIZE,
    _existing_dir,
    _LabelledSource,
    _visible_files,
)
from jaxsynth.data.types import Record, SkipReport
from jaxsynth.errors import UserError


class KagglePCamSource(_LabelledSource):
    """Kaggle's PCam copy: `<dir>/train/<id>.tif` (96x96) labelled by `<dir>/train_labels.csv`.

    Ids are `kaggle_pcam/<id>`, sorted. Problems found while matching the CSV to the files are
    recorded in `skipped` with the CSV line or file as the item: rows whose id has no file, files
    with no row, labels other than 0/1, repeated ids (later rows dropped; an id whose rows disagree
    on the label is dropped altogether).
    """

    class_names = PCAM_CLASSES
    has_masks = False

    def __init__(self, root: str | os.PathLike):
        self.root = _existing_dir(root, "Kaggle PCam folder")
        self.name = f"kaggle_pcam:{root}"
        self.skipped = SkipReport()
        train_dir = _existing_dir(self.root / "train", "Kaggle PCam image folder")
        csv_path = self.root / "train_labels.csv"
        if not csv_path.is_file():
            raise UserError(f"{csv_path}: labels file does not exist")
        files = {p.stem: p for p in _visible_files(train_dir)}
        rows = self._read_csv(csv_path)
        first_label: dict[str, int] = {}
        conflicting: set[str] = set()
        for line, file_id, raw in rows:
            item = f"train_labels.csv line {line} (id={file_id!r}, label={raw!r})"
            if raw not in ("0", "1"):
                self.skipped.skip(item, "label is not 0 or 1")
            elif file_id in first_label:
                if first_label[file_id] != int(raw):
                    conflicting.add(file_id)
                self.skipped.skip(item, "duplicate id in labels CSV")
            elif file_id not in files:
                self.skipped.skip(item, "labels CSV row with no image file")
            else:
                first_label[file_id] = int(raw)
        for file_id in sorted(conflicting):
            del first_label[file_id]
            self.skipped.skip(f"kaggle_pcam/{file_id}", "conflicting labels in labels CSV")
        for file_id, path in files.items():
            if file_id not in first_label and file_id not in conflicting:
                self.skipped.skip(f"train/{path.name}", "image file with no row in labels CSV")
        self._ids = sorted(first_label)
        if not self._ids:
            raise UserError(f"{csv_path}: no row matches an image file in {train_dir}")
        self._paths = [files[i] for i in self._ids]
        self.labels = np.asarray([first_label[i] for i in self._ids], np.int64)

    @staticmethod
    def _read_csv(path: Path) -> list[tuple[int, str, str]]:
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                fields = [f.strip() for f in reader.fieldnames or []]
                if "id" not in fields or "label" not in fields:
                    raise UserError(
                        f"{path}: expected columns 'id,label', found {','.join(fields) or 'none'}"
                    )
                reader.fieldnames = fields
                return [
                    (reader.line_num, (r["id"] or "").strip(), (r["label"] or "").strip())
                    for r in reader
                ]
        except (UnicodeDecodeError, csv.Error) as e:
            raise UserError(f"{path}: not a readable CSV file ({e})") from None

    def __len__(self) -> int:
        return len(self._ids)

    def id_of(self, index: int) -> str:
        return f"kaggle_pcam/{self._ids[index]}"

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        name = self.id_of(index)
        image, conversions = decode_image(self._paths[index], name=name, expected_size=PCAM_SIZE)
        return Record(image=image, label=self.label_of(index), id=name), conversions
