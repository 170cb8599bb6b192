"""`arrayrecord:<dir>`: shards + `manifest.json` written by data_prep/make_arrayrecord.py."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from typing import Any

import numpy as np

from jaxsynth.data.sources.base import (
    ARRAYRECORD_FORMAT,
    _existing_dir,
    _first_line,
    _LabelledSource,
)
from jaxsynth.data.types import CorruptImage, Record, SkipReport, pixel_hash
from jaxsynth.errors import UserError

_RECORD_MAGIC = b"JSR1"


def encode_record(record: Record) -> bytes:
    """One record as bytes: magic, header length, JSON header, raw image bytes, raw mask bytes."""
    image = np.ascontiguousarray(record.image, np.uint8)
    header = {
        "id": record.id,
        "label": int(record.label),
        "shape": list(image.shape),
        "mask": record.mask is not None,
    }
    head = json.dumps(header).encode()
    parts = [_RECORD_MAGIC, struct.pack("<I", len(head)), head, image.tobytes()]
    if record.mask is not None:
        parts.append(np.ascontiguousarray(record.mask, np.uint8).tobytes())
    return b"".join(parts)


def decode_record(data: bytes) -> Record:
    """Inverse of `encode_record`; raises CorruptImage on anything malformed."""
    try:
        if data[:4] != _RECORD_MAGIC:
            raise ValueError("bad magic")
        (n,) = struct.unpack("<I", data[4:8])
        header = json.loads(data[8 : 8 + n])
        h, w, c = header["shape"]
        start = 8 + n
        image = np.frombuffer(data, np.uint8, h * w * c, start).reshape(h, w, c)
        mask = None
        if header["mask"]:
            mask = np.frombuffer(data, np.uint8, h * w, start + h * w * c).reshape(h, w)
        return Record(image=image.copy(), label=int(header["label"]), id=header["id"], mask=mask)
    except (ValueError, KeyError, TypeError, struct.error) as e:
        raise CorruptImage(f"malformed ArrayRecord record ({e})") from None


class ArrayRecordSource(_LabelledSource):
    """A dataset prepared by `data_prep/make_arrayrecord.py`: shards + `manifest.json`.

    Labels and ids come from the manifest (no decoding); `load` checks each image against its
    SHA-256 in the manifest. What was skipped while preparing is restored into `skipped`.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = _existing_dir(root, "ArrayRecord dataset folder")
        self.name = f"arrayrecord:{root}"
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise UserError(f"{manifest_path}: manifest does not exist")
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != ARRAYRECORD_FORMAT:
                raise ValueError(f"format is {manifest.get('format')!r}")
            items = manifest["items"]
            self.class_names = tuple(manifest["class_names"])
            self.has_masks = bool(manifest["has_masks"])
            self._shards = [self.root / s["file"] for s in manifest["shards"]]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{manifest_path}: not a jaxsynth ArrayRecord manifest ({e})") from None
        for shard in self._shards:
            if not shard.is_file():
                raise UserError(f"{shard}: shard listed in the manifest does not exist")
        self.manifest = manifest
        self._ids = [it["id"] for it in items]
        self._hashes = [it["sha256"] for it in items]
        self._where = np.asarray([(it["shard"], it["index"]) for it in items], np.int64)
        self.labels = np.asarray([it["label"] for it in items], np.int64)
        self.skipped = SkipReport()
        for s in manifest.get("skipped", []):
            self.skipped.skip(s["item"], s["reason"])
        for s in manifest.get("converted", []):
            self.skipped.convert(s["item"], s["what"])
        self._readers: dict[int, Any] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_readers"] = {}
        return state

    def __len__(self) -> int:
        return len(self._ids)

    def id_of(self, index: int) -> str:
        return self._ids[index]

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        from array_record.python.array_record_module import ArrayRecordReader

        shard, pos = (int(v) for v in self._where[index])
        try:
            if shard not in self._readers:
                self._readers[shard] = ArrayRecordReader(str(self._shards[shard]))
            data = self._readers[shard].read([pos])[0]
        except Exception as e:  # noqa: BLE001 - a damaged shard
            raise CorruptImage(f"unreadable ArrayRecord shard ({_first_line(e)})") from None
        record = decode_record(data)
        if pixel_hash(record.image) != self._hashes[index]:
            raise CorruptImage("pixels do not match the manifest SHA-256")
        return dataclasses.replace(record, label=self.label_of(index)), []
