"""`tfds:<name>@<data_dir>`: a TFDS dataset already prepared as array_record (no TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsynth.data.sources.base import (
    PCAM_CLASSES,
    _existing_dir,
    _first_line,
    _NativeSplitSource,
)
from jaxsynth.data.types import CorruptImage, Record, SkipReport
from jaxsynth.errors import UserError

TFDS_DEFAULT_SPLITS = {
    "patch_camelyon": ("train", "validation", "test"),
    "colorectal_histology": ("train",),
}


class TfdsSource(_NativeSplitSource):
    """A TFDS dataset already prepared as array_record in a local data dir (no TensorFlow).

    Labels of all records are read once at open time (with image decoding skipped), since a
    study split must stratify by class. `patch_camelyon` labels are named ("normal", "tumour");
    other datasets use their ClassLabel names. Ids are `tfds/<name>/<split>/<row:06d>`.
    """

    has_masks = False

    def __init__(self, rest: str, *, splits: Sequence[str] | None = None):
        name, at, data_dir = rest.partition("@")
        if not at or not name or not data_dir:
            raise UserError(f"data.source: 'tfds:{rest}' must be tfds:<name>@<data_dir>")
        self.data_dir = _existing_dir(data_dir, "TFDS data dir")
        self.dataset = name
        self.name = f"tfds:{rest}"
        self.skipped = SkipReport()
        from jaxsynth.errors import require_extra

        require_extra("tfds", "data.source 'tfds:...'")
        import tensorflow_datasets as tfds

        base_name = name.split(":")[0].split("/")[0]
        try:
            info = tfds.builder(name, data_dir=str(self.data_dir)).info
        except Exception as e:  # noqa: BLE001 - unknown dataset name etc.
            raise UserError(f"tfds: cannot open dataset {name!r} ({_first_line(e)})") from None
        if base_name == "patch_camelyon":
            self.class_names = PCAM_CLASSES
        else:
            self.class_names = tuple(info.features["label"].names)
        known = tuple(info.splits.keys()) if info.splits else ()
        self.native_splits = tuple(
            splits or known or TFDS_DEFAULT_SPLITS.get(base_name, ("train",))
        )
        self._sources: dict[int, Any] = {}
        split_idx, rows, labels = [], [], []
        for k in range(len(self.native_splits)):
            split_labels = self._read_labels(k)
            split_idx += [k] * len(split_labels)
            rows += range(len(split_labels))
            labels += split_labels
        self._split_idx = np.asarray(split_idx, np.int64)
        self._rows = np.asarray(rows, np.int64)
        self.labels = np.asarray(labels, np.int64)
        if len(self.labels) == 0:
            raise UserError(f"tfds: {name} in {self.data_dir} has no records")

    def _read_labels(self, k: int) -> list[int]:
        """Labels of split k, leaving the images undecoded where TFDS allows it (much faster).

        `SkipDecoding` forwards the encoded image bytes in TFDS's NumPy path; if it fails
        anyway (e.g. under `tfds.testing.mock_data`, whose generator needs TensorFlow to
        re-encode), the labels are read with full decoding instead.
        """
        import contextlib
        import io

        import tensorflow_datasets as tfds

        ds = self._open(k)
        n = len(ds)
        try:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):  # TFDS prints a banner when it tries to import TensorFlow
                fast = tfds.data_source(
                    self.dataset,
                    split=self.native_splits[k],
                    data_dir=str(self.data_dir),
                    download=False,
                    decoders={"image": tfds.decode.SkipDecoding()},
                )
                if n:
                    int(fast[0]["label"])
        except Exception:  # noqa: BLE001 - fall back to full decoding
            fast = ds
        return [int(fast[row]["label"]) for row in range(n)]

    def _open(self, k: int) -> Any:
        if k not in self._sources:
            import tensorflow_datasets as tfds

            split = self.native_splits[k]
            try:
                self._sources[k] = tfds.data_source(
                    self.dataset, split=split, data_dir=str(self.data_dir), download=False
                )
            except Exception as e:  # noqa: BLE001 - not prepared, wrong format, bad split
                raise UserError(
                    f"tfds: {self.dataset} split {split!r} is not prepared as array_record in "
                    f"{self.data_dir} ({_first_line(e)})"
                ) from None
        return self._sources[k]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_sources"] = {}
        return state

    def id_of(self, index: int) -> str:
        return f"tfds/{self.dataset}/{self.split_of(index)}/{int(self._rows[index]):06d}"

    def load_with_conversions(self, index: int) -> tuple[Record, list[str]]:
        try:
            record = self._open(int(self._split_idx[index]))[int(self._rows[index])]
            image = np.asarray(record["image"])
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a corrupt record
            raise CorruptImage(f"unreadable TFDS record ({_first_line(e)})") from None
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise CorruptImage(f"unsupported: TFDS image {image.dtype}{tuple(image.shape)}")
        return Record(image=image, label=self.label_of(index), id=self.id_of(index)), []
