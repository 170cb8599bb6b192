"""Grain input pipelines: seeded shuffling, per-process sharding, [-1, 1] scaling, flips/rot90.

Why Grain: its dataset API makes the record order a pure function of (seed, step), so the iterator
state is a few integers that Orbax saves next to the model; a resumed run sees exactly the batches
an uninterrupted run would have seen. Each host reads only its own shard of every global batch
(`ShardByJaxProcess`), and `to_global` stitches the per-host pieces into one `jax.Array` sharded
over the mesh's "data" axis.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsynth.errors import UserError

AUGMENTATIONS = ("none", "flip", "flip_rot90")
READ_THREADS = 2  # threads reading (and augmenting) batches ahead of the training loop
READ_AHEAD_BATCHES = 4  # batches buffered ahead per process


class ArraySource:
    """Random-access source over in-memory arrays (a materialised study split).

    Records are dicts of numpy arrays: `image` uint8 HWC, `label` int32 and optionally `mask`
    uint8 HW. Top-level and picklable so Grain worker processes can use it.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        if "image" not in arrays or "label" not in arrays:
            raise UserError("pipeline arrays need 'image' and 'label'")
        n = len(arrays["image"])
        for k, v in arrays.items():
            if len(v) != n:
                raise UserError(f"pipeline array '{k}' has {len(v)} rows, 'image' has {n}")
        self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self._n = n
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        # Grain stores repr(data_source) in the iterator state and refuses to restore onto a
        # different one; a content fingerprint makes that check meaningful and stable across runs.
        if self._fingerprint is None:
            h = hashlib.sha256()
            for k in sorted(self._arrays):
                a = np.ascontiguousarray(self._arrays[k])
                h.update(f"{k}{a.shape}{a.dtype}".encode())
                h.update(a.tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return f"ArraySource(n={self._n}, sha256={self._fingerprint})"

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self._arrays.items()}


@dataclasses.dataclass(frozen=True)
class ToModelInput(grain.transforms.Map):
    """uint8 image -> float32 in [-1, 1]; uint8 mask -> float32 {0, 1} + channel axis.

    Works on single records and on whole batches alike.
    """

    def map(self, record: dict) -> dict:
        out = {
            "image": record["image"].astype(np.float32) / 127.5 - 1.0,
            "label": np.asarray(record["label"], np.int32),
        }
        if "mask" in record:
            out["mask"] = (record["mask"] > 0).astype(np.float32)[..., None]
        if "weight" in record:  # per-example loss weight (the classifiers' class weighting)
            out["weight"] = np.asarray(record["weight"], np.float32)
        return out


@dataclasses.dataclass(frozen=True)
class RandomDihedral(grain.transforms.RandomMap):
    """Random horizontal flip, and optionally a random multiple of 90° rotation.

    Histology has no canonical orientation, so these are label-preserving. The same transform is
    applied to the image and its mask. Grain seeds `rng` per record from the
    loader seed and the record position, so a resumed run re-draws the same flips.
    """

    rot90: bool = False

    def random_map(self, record: dict, rng: np.random.Generator) -> dict:
        keys = [k for k in ("image", "mask") if k in record]
        flip = bool(rng.integers(2))
        k = int(rng.integers(4)) if self.rot90 else 0
        out = dict(record)
        for key in keys:
            x = record[key]
            if flip:
                x = x[:, ::-1]
            if k:
                x = np.rot90(x, k, axes=(0, 1))
            out[key] = np.ascontiguousarray(x)
        return out


def _ensure_absl_flags_parsed() -> None:
    """Grain worker processes read absl flags; outside `absl.app.run` they are unparsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def local_batch_size(global_batch_size: int) -> int:
    """This process's share of the global batch; the global batch must split evenly."""
    count = jax.process_count()
    if global_batch_size % count:
        raise UserError(f"batch_size={global_batch_size} is not divisible by the {count} processes")
    return global_batch_size // count


class ProcessRows(grain.MapDataset):
    """This process's rows of every global batch of a record stream (multi-host sharding).

    Element j of process p is element `(j // L) * B + p * L + j % L` of `parent`, where B is the
    global batch and L = B / process_count the local one. WHY not a strided shard shuffled per
    process: then the global batches (and the trained model) would change with the number of
    hosts; here a 2-host run sees exactly the batches a 1-host run sees, each host reading (and
    augmenting) only its own rows, never another host's.
    """

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, global_batch: int, index: int, count: int):
        super().__init__(parent)
        if global_batch % count or not 0 <= index < count:
            raise UserError(f"batch_size={global_batch} cannot be split over {count} processes")
        self._global = global_batch
        self._local = global_batch // count
        self._offset = index * self._local
        self._length = (len(parent) // global_batch) * self._local
        self._desc = f"ProcessRows(global_batch={global_batch}, process={index}/{count})"

    def __len__(self) -> int:
        return self._length

    def parent_index(self, index: int) -> int:
        q, r = divmod(index, self._local)
        return q * self._global + self._offset + r

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self.parent_index(index)]

    def _getitems(self, indices):
        return self._parent._getitems([self.parent_index(i) for i in indices])

    def __str__(self) -> str:
        return self._desc


class Loader:
    """An iterable over batches whose iterators save and restore their position exactly.

    `iter(loader)` returns a Grain `DatasetIterator`: `get_state()` gives a small JSON-able dict
    that Orbax stores with the model, and `set_state(state)` on a fresh iterator of an identical
    loader continues with exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, dataset: grain.IterDataset, num_records: int, batch_size: int):
        self._dataset = dataset
        self.num_records = num_records  # records in this process's shard
        self.batch_size = batch_size  # this process's share of the global batch

    def __iter__(self):
        return iter(self._dataset)

    def __repr__(self) -> str:
        return f"Loader(records={self.num_records}, local_batch={self.batch_size})"


def make_loader(
    arrays: Mapping[str, np.ndarray],
    *,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    augment: str = "none",
    num_epochs: int | None = None,
    worker_count: int = 0,
    drop_remainder: bool = True,
) -> Loader:
    """A Grain pipeline yielding this process's share of each global batch.

    Batches are dicts: `image` float32 [-1, 1] (B, H, W, 3), `label` int32 (B,), and `mask`
    float32 {0, 1} (B, H, W, 1) when `arrays` has one. `num_epochs=None` repeats forever.
    The record stream (shuffle, repeat, augmentation) is the same on every process; process p
    reads only rows [p*L, (p+1)*L) of each global batch (`ProcessRows`), so the processes read
    disjoint records and the global batches, hence the trained model, do not depend on how many
    processes share the work. Scaling runs on whole
    batches (vectorised); only the random flips/rotations are per record.
    """
    if augment not in AUGMENTATIONS:
        raise UserError(f"data.augment='{augment}' is not one of {', '.join(AUGMENTATIONS)}")
    source = ArraySource(arrays)
    if len(source) == 0:
        raise UserError("pipeline got an empty dataset")
    batch = local_batch_size(global_batch_size)
    index, count = jax.process_index(), jax.process_count()
    ds = grain.MapDataset.source(source)
    if drop_remainder and len(ds) < global_batch_size:
        raise UserError(
            f"batch_size={global_batch_size} is larger than the {len(source)} training images"
        )
    num_records = len(ds) // count
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if augment != "none":
        ds = ds.random_map(RandomDihedral(rot90=augment == "flip_rot90"), seed=seed + 1)
    if count > 1:
        ds = ProcessRows(ds, global_batch_size, index, count)
    ds = ds.batch(batch, drop_remainder=drop_remainder).map(ToModelInput())
    # Bounded read-ahead: Grain's default (16 threads, 500 batches) keeps the host busy for
    # hundreds of batches at start-up and competes with tracing/compiling for the GIL (tracing a
    # GAN step took 6-10x longer with it, bench/README); a few batches ahead is enough to hide
    # loading behind a training step.
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=READ_AHEAD_BATCHES)
    )
    if worker_count > 0:
        _ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return Loader(it_ds, num_records, batch)


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh's "data" axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec("data"))


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Per-process local batch -> global arrays sharded on the "data" axis (multi-host safe)."""
    sharding = data_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }
