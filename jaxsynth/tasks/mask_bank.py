"""A bank of training-split nuclei masks inside the pix2pix TrainState, and new layouts from it.

Why: pix2pix as a *study generator* must draw tumour tiles from tumour-like layouts, and those
layouts may come only from the training split (issue 16). A Task holds no data, but its state
can: every train step writes the batch's masks and labels into a ring buffer of
`pix2pix.mask_bank` entries (training batches only ever hold training-split tiles). Sampling
then builds each new layout from four quadrants, each cut from a randomly chosen bank mask of
the requested class under a random flip/rotation (the dihedral group of the square), so a
sample's layout is not a copy of any one training tile (the study's memorisation filter still
has the last word). The bank is a pytree in the checkpoint, so resume stays exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bank_init(capacity: int, image_size: int) -> dict:
    return {
        "bank_masks": jnp.zeros((capacity, image_size, image_size, 1), jnp.float32),
        "bank_labels": jnp.zeros((capacity,), jnp.int32),
        "bank_count": jnp.zeros((), jnp.int32),
    }


def bank_add(bank: dict, masks: jax.Array, labels: jax.Array) -> dict:
    """Write a batch into the ring buffer (oldest entries overwritten first)."""
    cap = bank["bank_masks"].shape[0]
    b = masks.shape[0]
    if b > cap:  # only the last `cap` rows can survive
        masks, labels, b = masks[-cap:], labels[-cap:], cap
    idx = (bank["bank_count"] + jnp.arange(b)) % cap
    return {
        "bank_masks": bank["bank_masks"].at[idx].set(masks.astype(jnp.float32)),
        "bank_labels": bank["bank_labels"].at[idx].set(labels.astype(jnp.int32)),
        "bank_count": bank["bank_count"] + b,
    }


def dihedral(x: jax.Array, k: jax.Array) -> jax.Array:
    """x (S, S, C) under element k in [0, 8) of the square's symmetry group (k // 4: flip,
    k % 4: quarter turns)."""
    x = jnp.where(k // 4 == 1, x[:, ::-1], x)
    turns = [jnp.rot90(x, r, axes=(0, 1)) for r in range(4)]
    return jax.lax.switch(k % 4, [lambda t=t: t for t in turns])


def bank_layouts(
    bank: dict, rng: jax.Array, labels: jax.Array | None, fallback: jax.Array
) -> jax.Array:
    """One new layout per row of `fallback` (n, S, S, 1) from four transformed quadrants of bank
    masks of that row's class (any class when `labels` is None); rows whose class has no bank
    entry yet keep `fallback`'s row."""
    cap = bank["bank_masks"].shape[0]
    s = bank["bank_masks"].shape[1]
    h = s // 2
    filled = jnp.arange(cap) < jnp.minimum(bank["bank_count"], cap)

    def one(label, key, fb):
        ok = filled & ((bank["bank_labels"] == label) | (label < 0))
        kp, kt = jax.random.split(key)
        logits = jnp.where(ok, 0.0, -jnp.inf)
        picks = jax.random.categorical(kp, jnp.where(ok.any(), logits, 0.0), shape=(4,))
        ks = jax.random.randint(kt, (4,), 0, 8)
        quads = [dihedral(bank["bank_masks"][picks[q]], ks[q]) for q in range(4)]
        top = jnp.concatenate([quads[0][:h, :h], quads[1][:h, h:]], axis=1)
        bottom = jnp.concatenate([quads[2][h:, :h], quads[3][h:, h:]], axis=1)
        return jnp.where(ok.any(), jnp.concatenate([top, bottom], axis=0), fb)

    n = fallback.shape[0]
    labels = jnp.full((n,), -1, jnp.int32) if labels is None else labels
    keys = jax.random.split(rng, n)
    return jax.vmap(one)(labels, keys, fallback)
