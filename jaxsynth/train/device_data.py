"""Device-resident training data: small datasets live on the accelerator, batches drawn in-jit.

WHY: the study trains on a few hundred tiles (880 at 32 px = 2.7 MB). Reading each batch from
Grain on the host, converting it and copying it to the device costs more than the step itself
for small models, and it ties every step to the host. When the arrays fit under
`train.device_data_max_bytes` they are put on device once (replicated) and the jitted step draws
its own batch: the same record stream as the Grain path's *semantics* (one shuffled pass over
the data per epoch, batches running across epoch boundaries, no record repeated within an
epoch), the same augmentations (`none` / `flip` / `flip_rot90`, image and mask together), all
keyed by `fold_in(data_key, step)`. The position in the data is the step number, so a resumed
run sees exactly the batches of an uninterrupted one with nothing extra in the checkpoint.
(The order differs from Grain's: the two paths are each deterministic, not identical.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsynth.errors import UserError

DATA_STREAM = 0x0DA7A  # folded into PRNGKey(config.seed): the data stream's own key
MODES = ("auto", "on", "off")


def data_bytes(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(np.asarray(v).nbytes for v in arrays.values()))


def use_device_data(mode: str, arrays: dict[str, np.ndarray], max_bytes: int) -> bool:
    """Resolve `train.device_data`: "on", "off", or "auto" (on when the arrays fit and this is
    a single-process run: multi-host runs keep Grain, where each host reads only its own rows
    of every global batch)."""
    if mode not in MODES:
        raise UserError(f"train.device_data='{mode}' is not one of {', '.join(MODES)}")
    if mode == "auto":
        return jax.process_count() == 1 and data_bytes(arrays) <= int(max_bytes)
    return mode == "on"


RECORD_KEYS = ("image", "label", "mask", "weight")  # per-record arrays the engine draws from
BUCKET = 256  # device arrays are padded to a multiple of this many records


def fixed_batches(n: int, batch_size: int):
    """Yield (index array, validity mask) pairs of exactly `min(batch_size, n)` rows covering rows
    0..n-1 in order, the last batch padded with row 0 and masked. WHY: every batch then has one
    shape, so evaluation and prediction compile once, whatever n is."""
    size = min(batch_size, max(n, 1))
    for start in range(0, n, size):
        idx = np.arange(start, start + size)
        valid = idx < n
        yield np.where(valid, idx, 0), valid


def padded_size(n: int) -> int:
    """Records on device for `n` real ones: `n` below `BUCKET`, else the next multiple of
    `BUCKET`. WHY: the record count is then a runtime value, not a shape, so the study's arms
    (training sets of different sizes) share one compiled step per bucket instead of compiling
    one each; tiny sets stay exact so a batch spans few epochs (see `min_count`)."""
    n = int(n)
    return n if n < BUCKET else -(-n // BUCKET) * BUCKET


def min_count(size: int) -> int:
    """The fewest real records an array of `size` rows holds (a static bound on how many
    epochs one batch can span: fewer means fewer permutations drawn per step)."""
    return size if size < BUCKET else max(BUCKET, size - BUCKET + 1)


def seed_data_key(seed: int) -> jax.Array:
    """The record order's key of a run with `config.seed = seed` (its own stream, independent
    of the init and step keys, which derive from `PRNGKey(seed)` itself)."""
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), DATA_STREAM)


def pad_records(arrays: dict[str, np.ndarray], size: int | None = None) -> dict[str, np.ndarray]:
    """The record arrays (`RECORD_KEYS`) on the host, zero-padded to `size` rows (default
    `padded_size(n)`), labels int32, weights float32. A larger `size` changes no draw: the first
    `n` entries of every epoch's order do not depend on the padding (`_epoch_perm`), so several
    training sets padded to one size (the engine's member axis) draw what each draws alone."""
    n = len(arrays["image"])
    size = padded_size(n) if size is None else int(size)
    if size < n:
        raise ValueError(f"cannot pad {n} records to {size}")
    out = {}
    for key in RECORD_KEYS:
        if key not in arrays:
            continue
        a = np.asarray(arrays[key])
        a = a.astype(np.int32) if key == "label" else a
        a = a.astype(np.float32) if key == "weight" else a
        out[key] = np.concatenate([a, np.zeros((size - n, *a.shape[1:]), a.dtype)])
    return out


def put_on_device(arrays: dict[str, np.ndarray], sharding, data_key) -> dict[str, jax.Array]:
    """The training arrays, zero-padded to `padded_size` records and replicated on every
    device, plus `count` (the real records, int32) and `data_key` (the record order's key).

    Every process holds the full arrays (the engine gets the whole training split), so a
    callback returning the whole array is multi-host safe."""
    n = len(arrays["image"])
    out = {
        key: jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx])
        for key, a in pad_records(arrays).items()
    }
    out["count"] = jax.device_put(np.int32(n), sharding)
    out["data_key"] = jax.device_put(np.asarray(data_key), sharding)
    return out


def _epoch_perm(key: jax.Array, epoch: jax.Array, n, size: int) -> jax.Array:
    """A uniformly random order of records `0..n-1` in the first `n` of `size` slots (the rest
    are padding). `n` may be traced: sorting random 32-bit keys with the padding's forced to the
    maximum (a stable sort keeps real records, which have lower indices, ahead of ties).

    The first `n` entries do not depend on `size`: with jax's partitionable threefry (the
    default since jax 0.5, `jax_threefry_partitionable`) the bits of slot i depend only on i,
    so a training set padded further (`pad_records`) is drawn in the same order."""
    bits = jax.random.bits(jax.random.fold_in(key, epoch), (size,), jnp.uint32)
    bits = jnp.where(jnp.arange(size) < n, bits, jnp.uint32(0xFFFFFFFF))
    return jnp.argsort(bits, stable=True).astype(jnp.int32)


def batch_indices(
    key: jax.Array,
    step: jax.Array,
    n,
    batch: int,
    size: int | None = None,
    least: int | None = None,
) -> jax.Array:
    """Record indices of global batch `step`: records `step*batch ... +batch` of the stream
    that concatenates one shuffled pass over records `0..n-1` per epoch (epoch e keyed by
    `fold_in(key, e)`). `n` may be traced when `size` (the padded length) and `least` (a static
    lower bound on n) are given; a batch spans at most ceil(batch/least)+1 epochs."""
    size = int(n) if size is None else size
    least = int(n) if least is None else least
    start = step.astype(jnp.int32) * batch + jnp.arange(batch, dtype=jnp.int32)
    epoch = start // n
    pos = start % n
    first = epoch[0]
    spans = -(-batch // least) + 1
    perms = jnp.stack([_epoch_perm(key, first + e, n, size) for e in range(spans)])
    return perms[epoch - first, pos]


def _dihedral(x: jax.Array, flip: jax.Array, rot: jax.Array | None) -> jax.Array:
    """x: (B, H, W, C); per-example horizontal flip then rot90 by `rot` quarter turns (the
    Grain `RandomDihedral` order). Rotation needs square images (checked by the caller)."""
    sel = flip.reshape(-1, 1, 1, 1)
    x = jnp.where(sel, x[:, :, ::-1], x)
    if rot is None:
        return x
    turns = [x] + [jnp.rot90(x, k, axes=(1, 2)) for k in (1, 2, 3)]
    out = turns[0]
    for k in (1, 2, 3):
        out = jnp.where((rot == k).reshape(-1, 1, 1, 1), turns[k], out)
    return out


def draw_batch(
    data: dict[str, jax.Array],
    key: jax.Array,
    step: jax.Array,
    batch: int,
    augment: str = "none",
    least: int | None = None,
) -> dict[str, jax.Array]:
    """The engine's batch for `step` from device-resident arrays: image float32 [-1, 1],
    label int32, mask float32 {0, 1} (B, H, W, 1) and weight float32 when present. With
    `data["count"]` (arrays padded by `put_on_device`) only the first `count` records are
    drawn. The record order uses `fold_in(key, 0)`, the augmentations
    `fold_in(fold_in(key, 1), step)`. `least`: a static lower bound on `count` when the
    padding is not `padded_size(count)`'s (default `min_count(size)`); it only sets how many
    epoch orders a step computes, never which records it draws."""
    size = data["image"].shape[0]
    if "count" not in data:
        n, least = size, size
    else:
        n, least = data["count"], min_count(size) if least is None else int(least)
    order_key, aug_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    idx = batch_indices(order_key, step, n, batch, size, least)
    image = data["image"][idx].astype(jnp.float32) / 127.5 - 1.0
    out = {"image": image, "label": data["label"][idx].astype(jnp.int32)}
    if "mask" in data:
        out["mask"] = (data["mask"][idx] > 0).astype(jnp.float32)[..., None]
    if "weight" in data:
        out["weight"] = data["weight"][idx].astype(jnp.float32)
    if augment != "none":
        akey = jax.random.fold_in(aug_key, step)
        fkey, rkey = jax.random.split(akey)
        flip = jax.random.bernoulli(fkey, 0.5, (batch,))
        rot = jax.random.randint(rkey, (batch,), 0, 4) if augment == "flip_rot90" else None
        for k in ("image", "mask"):
            if k in out:
                out[k] = _dihedral(out[k], flip, rot)
    return out


def check_augment(augment: str, arrays: dict[str, np.ndarray]) -> None:
    from jaxsynth.data.pipeline import AUGMENTATIONS

    if augment not in AUGMENTATIONS:
        raise UserError(f"data.augment='{augment}' is not one of {', '.join(AUGMENTATIONS)}")
    h, w = np.asarray(arrays["image"]).shape[1:3]
    if augment == "flip_rot90" and h != w:
        raise UserError(f"data.augment='flip_rot90' needs square images, got {h}x{w}")
