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


def put_on_device(arrays: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """The training arrays (uint8 images/masks, int32 labels), replicated on every device.

    Every process holds the full arrays (the engine gets the whole training split), so a
    callback returning the whole array is multi-host safe."""
    out = {}
    for key in ("image", "label", "mask"):
        if key not in arrays:
            continue
        a = np.asarray(arrays[key])
        a = a.astype(np.int32) if key == "label" else a
        out[key] = jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx])
    return out


def _epoch_perm(key: jax.Array, epoch: jax.Array, n: int) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def batch_indices(key: jax.Array, step: jax.Array, n: int, batch: int) -> jax.Array:
    """Record indices of global batch `step`: records `step*batch ... +batch` of the stream
    that concatenates one permutation of `range(n)` per epoch (permutation e keyed by
    `fold_in(key, e)`). A batch spans at most ceil(batch/n)+1 epochs."""
    start = step.astype(jnp.int32) * batch + jnp.arange(batch, dtype=jnp.int32)
    epoch = start // n
    pos = start % n
    first = epoch[0]
    spans = -(-batch // n) + 1
    perms = jnp.stack([_epoch_perm(key, first + e, n) for e in range(spans)])
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
) -> dict[str, jax.Array]:
    """The engine's batch for `step` from device-resident arrays: image float32 [-1, 1],
    label int32, mask float32 {0, 1} (B, H, W, 1) when present. The record order uses
    `fold_in(key, 0)`, the augmentations `fold_in(fold_in(key, 1), step)`."""
    n = data["image"].shape[0]
    order_key, aug_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    idx = batch_indices(order_key, step, n, batch)
    image = data["image"][idx].astype(jnp.float32) / 127.5 - 1.0
    out = {"image": image, "label": data["label"][idx].astype(jnp.int32)}
    if "mask" in data:
        out["mask"] = (data["mask"][idx] > 0).astype(jnp.float32)[..., None]
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
