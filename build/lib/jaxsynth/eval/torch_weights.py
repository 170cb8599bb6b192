"""Read a PyTorch state dict (`.pth`) into numpy arrays without importing torch.

Why: FID is only comparable when computed with pytorch-fid's Inception weights, which ship as
a `.pth` file; torch is a 2+ GB dependency we do not want at run time. A `.pth` is a pickle
of an OrderedDict of tensors, where each tensor is rebuilt by `torch._utils._rebuild_tensor_v2`
from a "persistent" storage reference. Two container layouts exist:

* zip (torch >= 1.6 default): `<prefix>/data.pkl` plus one raw little-endian file per storage,
  `<prefix>/data/<key>`;
* legacy (torch < 1.6, and `_use_new_zipfile_serialization=False`): a stream of pickles --
  magic number, protocol version, sys info, the object, the list of storage keys -- followed
  by each storage as an int64 element count and its raw bytes.

The unpickler is restricted: it resolves only the handful of globals a state dict of plain
tensors needs (OrderedDict, the tensor-rebuild functions, the typed storage classes) and
raises `UnsafeCheckpoint` on anything else, so a malicious file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpoint(pickle.UnpicklingError):
    """The file references something other than plain tensors (refused, never executed)."""


class _StorageType:
    """Stands in for torch.<X>Storage: only carries the numpy dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _LazyStorage:
    """A storage whose bytes are filled in later (legacy) or read from the zip (new)."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    """Legacy files may reference a slice of a storage (`view_metadata`); bytes come from the
    base storage once they are read."""

    def __init__(self, base: _LazyStorage, offset: int, size: int):
        self.base, self.offset, self.size = base, int(offset), int(size)

    @property
    def data(self) -> np.ndarray | None:
        if self.base.data is None:
            return None
        return self.base.data[self.offset : self.offset + self.size]


class _TensorRef:
    """A tensor view waiting for its storage's bytes (legacy files put bytes after the pickle)."""

    def __init__(self, storage: _LazyStorage, offset: int, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def materialize(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise pickle.UnpicklingError("tensor storage bytes missing from checkpoint")
        if not self.size:
            return flat[self.offset].copy()
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, *rest):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpoint(f"refusing to load {module}.{name}: not part of a tensor state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafeCheckpoint(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpoint(f"unexpected storage type {storage_type!r}")
        storage = self._load_storage(key, storage_type.dtype, numel)
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # legacy (view_key, offset, view_size)
            _view_key, offset, size = view
            return _StorageView(storage, offset, size)
        return storage


def _resolve(obj):
    """Replace every _TensorRef inside (nested) dicts/lists with its numpy array."""
    if isinstance(obj, _TensorRef):
        return obj.materialize()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _load_zip(zf: zipfile.ZipFile) -> object:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if len(pkl) != 1:
        raise pickle.UnpicklingError("zip checkpoint without exactly one data.pkl")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder_name = prefix + "byteorder"
    if byteorder_name in names and zf.read(byteorder_name).strip() != b"little":
        raise pickle.UnpicklingError("big-endian checkpoints are not supported")
    cache: dict[str, _LazyStorage] = {}

    def load_storage(key: str, dtype: np.dtype, numel: int) -> _LazyStorage:
        if key not in cache:
            s = _LazyStorage(dtype, numel)
            raw = zf.read(f"{prefix}data/{key}")
            s.data = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
            cache[key] = s
        return cache[key]

    with zf.open(pkl[0]) as f:
        obj = _RestrictedUnpickler(io.BytesIO(f.read()), load_storage).load()
    return _resolve(obj)


class _HeaderUnpickler(pickle.Unpickler):
    """For the legacy header pickles (ints, a dict of sys info, a list of keys): no globals."""

    def find_class(self, module: str, name: str):
        raise UnsafeCheckpoint(f"refusing to load {module}.{name} in a checkpoint header")


def _load_legacy(f: io.BufferedIOBase) -> object:
    magic = _HeaderUnpickler(f).load()
    if magic != LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a PyTorch checkpoint (bad magic number)")
    _protocol = _HeaderUnpickler(f).load()
    _sys_info = _HeaderUnpickler(f).load()
    storages: dict[str, _LazyStorage] = {}

    def load_storage(key: str, dtype: np.dtype, numel: int) -> _LazyStorage:
        if key not in storages:
            storages[key] = _LazyStorage(dtype, numel)
        return storages[key]

    obj = _RestrictedUnpickler(f, load_storage).load()
    keys = _HeaderUnpickler(f).load()
    for key in keys:
        s = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        raw = f.read(numel * s.dtype.itemsize)
        if len(raw) != numel * s.dtype.itemsize:
            raise pickle.UnpicklingError("checkpoint truncated")
        s.data = np.frombuffer(raw, dtype=s.dtype.newbyteorder("<"))
    return _resolve(obj)


def load_state_dict(path: str | Path) -> collections.OrderedDict[str, np.ndarray]:
    """Read a `.pth` state dict (zip or legacy format) as an OrderedDict of numpy arrays.

    Raises `UnsafeCheckpoint` if the file references anything other than tensors and
    `pickle.UnpicklingError` (or `zipfile.BadZipFile`) if it is not a valid checkpoint.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            obj = _load_zip(zf)
    else:
        with open(path, "rb") as f:
            obj = _load_legacy(f)
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj
