"""ADA (Karras et al. 2020, "Training GANs with limited data"): the differentiable augmentation
pipeline applied to every image the discriminator sees, and the controller of its strength `p`.

WHY: with ~100 training images D memorises the real set and G collapses. Augmenting both real
and fake images *with the same distribution* keeps D from overfitting without leaking the
augmentations into G's output, as long as each augmentation is applied with probability p < ~0.8.
`p` is tuned on the fly from the overfitting heuristic r_t = E[sign(D(real))]: above the target
(0.6) D is too sure of the reals, so p rises; below, p falls.

Pipeline (the paper's "bgc"), every op drawn per image and applied with probability p:

* blit: x-flip, rotation by a multiple of 90°, integer translation (±12.5 %);
* geometric: isotropic scale (lognormal, σ = 0.2·ln 2), rotation (uniform, with probability
  1 - √(1 - p) twice), anisotropic scale, fractional translation (σ = 0.125);
  blit and geometric compose into ONE inverse affine map per image, then ONE bilinear resampling
  with reflect padding (the official pipeline also pre-filters with a wavelet to limit aliasing;
  omitted here);
* colour: brightness (σ 0.2), contrast (lognormal σ 0.5·ln 2), luma flip, hue rotation (uniform),
  saturation (lognormal σ ln 2), composed into one 3×4 matrix per image.

Everything is differentiable in the image (gathers), so G's gradient flows through it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

GROUPS = ("b", "g", "c")


def parse_groups(spec: str) -> tuple[str, ...]:
    """'bgc' -> ('b', 'g', 'c'); ValueError naming the bad letter otherwise."""
    bad = [ch for ch in spec if ch not in GROUPS]
    if bad:
        raise ValueError(f"ada.augment='{spec}': unknown group(s) {bad} (letters of 'bgc')")
    return tuple(ch for ch in GROUPS if ch in spec)


# ----------------------------------------------------------------------------- 2-D matrices
def _eye(b: int, n: int) -> jax.Array:
    return jnp.broadcast_to(jnp.eye(n), (b, n, n))


def _scale2d(sx: jax.Array, sy: jax.Array) -> jax.Array:
    z, o = jnp.zeros_like(sx), jnp.ones_like(sx)
    return jnp.stack(
        [jnp.stack([sx, z, z], -1), jnp.stack([z, sy, z], -1), jnp.stack([z, z, o], -1)], 1
    )


def _rotate2d(t: jax.Array) -> jax.Array:
    c, s, z, o = jnp.cos(t), jnp.sin(t), jnp.zeros_like(t), jnp.ones_like(t)
    return jnp.stack(
        [jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1), jnp.stack([z, z, o], -1)], 1
    )


def _translate2d(tx: jax.Array, ty: jax.Array) -> jax.Array:
    z, o = jnp.zeros_like(tx), jnp.ones_like(tx)
    return jnp.stack(
        [jnp.stack([o, z, tx], -1), jnp.stack([z, o, ty], -1), jnp.stack([z, z, o], -1)], 1
    )


def _gate(key: jax.Array, p: jax.Array, value: jax.Array, neutral: float | jax.Array) -> jax.Array:
    """`value` where a uniform draw is < p (per image), `neutral` elsewhere."""
    on = jax.random.uniform(key, value.shape[:1]) < p
    return jnp.where(on.reshape(on.shape + (1,) * (value.ndim - 1)), value, neutral)


def geometric_matrix(key: jax.Array, b: int, size: int, p: jax.Array, blit: bool, geom: bool):
    """(b, 3, 3) inverse maps from output to input pixel coordinates (centred)."""
    k = iter(jax.random.split(key, 24))
    g = _eye(b, 3)
    if blit:
        i = jnp.floor(jax.random.uniform(next(k), (b,)) * 2)
        g = g @ _scale2d(1 - 2 * _gate(next(k), p, i, 0.0), jnp.ones((b,)))  # x-flip
        i = jnp.floor(jax.random.uniform(next(k), (b,)) * 4)
        g = g @ _rotate2d(-0.5 * math.pi * _gate(next(k), p, i, 0.0))  # rotate 90°·i
        t = (jax.random.uniform(next(k), (b, 2)) * 2 - 1) * 0.125
        t = jnp.round(_gate(next(k), p, t, 0.0) * size)  # integer translation
        g = g @ _translate2d(-t[:, 0], -t[:, 1])
    if geom:
        s = jnp.exp2(jax.random.normal(next(k), (b,)) * 0.2)
        s = _gate(next(k), p, s, 1.0)
        g = g @ _scale2d(1 / s, 1 / s)  # isotropic scale
        p_rot = 1 - jnp.sqrt(1 - jnp.minimum(p, 1.0))
        t = (jax.random.uniform(next(k), (b,)) * 2 - 1) * math.pi
        g = g @ _rotate2d(-_gate(next(k), p_rot, t, 0.0))  # pre-rotation
        s = _gate(next(k), p, jnp.exp2(jax.random.normal(next(k), (b,)) * 0.2), 1.0)
        g = g @ _scale2d(1 / s, s)  # anisotropic scale
        t = (jax.random.uniform(next(k), (b,)) * 2 - 1) * math.pi
        g = g @ _rotate2d(-_gate(next(k), p_rot, t, 0.0))  # post-rotation
        t = _gate(next(k), p, jax.random.normal(next(k), (b, 2)) * 0.125, 0.0) * size
        g = g @ _translate2d(-t[:, 0], -t[:, 1])  # fractional translation
    return g


def _reflect(u: jax.Array, n: int) -> jax.Array:
    """Map continuous coordinates into [0, n-1] by mirror reflection (no repeated edge)."""
    period = 2.0 * (n - 1)
    u = jnp.mod(u, period)
    return jnp.where(u > n - 1, period - u, u)


def warp(x: jax.Array, g_inv: jax.Array) -> jax.Array:
    """Bilinear resampling of x (B,H,W,C) at g_inv @ (output pixel, centred), reflect padded."""
    b, h, w, c = x.shape
    ys, xs = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing="ij")
    coords = jnp.stack([xs.ravel(), ys.ravel(), jnp.ones(h * w)], 0)  # (3, HW)
    src = g_inv @ coords  # (B, 3, HW)
    u = _reflect(src[:, 0] + (w - 1) / 2, w)
    v = _reflect(src[:, 1] + (h - 1) / 2, h)
    u0 = jnp.clip(jnp.floor(u), 0, w - 1)
    v0 = jnp.clip(jnp.floor(v), 0, h - 1)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]
    u0i, v0i = u0.astype(jnp.int32), v0.astype(jnp.int32)
    u1i, v1i = jnp.minimum(u0i + 1, w - 1), jnp.minimum(v0i + 1, h - 1)
    flat = x.reshape(b, h * w, c)

    def tap(vi, ui):
        return jnp.take_along_axis(flat, (vi * w + ui)[..., None], axis=1)

    top = tap(v0i, u0i) * (1 - fu) + tap(v0i, u1i) * fu
    bottom = tap(v1i, u0i) * (1 - fu) + tap(v1i, u1i) * fu
    return (top * (1 - fv) + bottom * fv).reshape(b, h, w, c)


def color_matrix(key: jax.Array, b: int, p: jax.Array) -> jax.Array:
    """(b, 4, 4) homogeneous colour transforms (images in [-1, 1])."""
    k = iter(jax.random.split(key, 10))
    eye = _eye(b, 4)
    v = jnp.array([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)  # luma axis
    vv = jnp.outer(v, v)
    m = eye
    br = _gate(next(k), p, jax.random.normal(next(k), (b,)) * 0.2, 0.0)
    m = eye.at[:, :3, 3].set(br[:, None]) @ m  # brightness
    ct = _gate(next(k), p, jnp.exp2(jax.random.normal(next(k), (b,)) * 0.5), 1.0)
    m = (
        eye * jnp.concatenate([jnp.broadcast_to(ct[:, None], (b, 3)), jnp.ones((b, 1))], 1)[:, None]
    ) @ m
    i = _gate(next(k), p, jnp.floor(jax.random.uniform(next(k), (b,)) * 2), 0.0)
    m = (eye - 2 * vv * i[:, None, None]) @ m  # luma flip
    t = _gate(next(k), p, (jax.random.uniform(next(k), (b,)) * 2 - 1) * math.pi, 0.0)
    m = _rotate_about(v[:3], t) @ m  # hue rotation
    s = _gate(next(k), p, jnp.exp2(jax.random.normal(next(k), (b,)) * 1.0), 1.0)
    m = (vv + (eye - vv) * s[:, None, None]) @ m  # saturation
    return m


def _rotate_about(axis: jax.Array, t: jax.Array) -> jax.Array:
    """(b, 4, 4) rotation by angle t about the unit 3-vector `axis` (Rodrigues)."""
    x, y, z = axis[0], axis[1], axis[2]
    c, s = jnp.cos(t)[:, None, None], jnp.sin(t)[:, None, None]
    kmat = jnp.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    r = jnp.eye(3) + s * kmat + (1 - c) * (kmat @ kmat)
    out = jnp.broadcast_to(jnp.eye(4), (t.shape[0], 4, 4))
    return out.at[:, :3, :3].set(r)


def augment(x: jax.Array, key: jax.Array, p: jax.Array, groups: tuple[str, ...]) -> jax.Array:
    """Apply the `groups` ⊆ ('b', 'g', 'c') pipeline at strength p to a batch in [-1, 1]."""
    b, h, w, _ = x.shape
    kg, kc = jax.random.split(key)
    if "b" in groups or "g" in groups:
        x = warp(x, geometric_matrix(kg, b, w, p, "b" in groups, "g" in groups))
    if "c" in groups:
        m = color_matrix(kc, b, p)
        x = jnp.einsum("bij,bhwj->bhwi", m[:, :3, :3], x) + m[:, None, None, :3, 3]
    return x


def ada_adjust(
    p: jax.Array, sign_sum: jax.Array, count: jax.Array, target: float, speed_images: float
) -> jax.Array:
    """The paper's controller: p += sign(r_t - target) · (images seen since last adjust) /
    (images for p to traverse 0 -> 1), clipped to [0, 1]; r_t = sign_sum / count."""
    rt = sign_sum / jnp.maximum(count, 1.0)
    return jnp.clip(p + jnp.sign(rt - target) * count / speed_images, 0.0, 1.0)
