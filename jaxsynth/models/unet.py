"""The DDPM U-Net (Ho et al. 2020 / Nichol & Dhariwal 2021 layout) in Flax linen.

WHY this shape: paper 002 trains the U-Net of `denoising-diffusion-pytorch` (a Ho et al. U-Net):
residual blocks with GroupNorm + SiLU, a sinusoidal time embedding added in every block,
self-attention at the low resolutions, channel multipliers per level. The same module serves the
three conditioning modes of paper 002 and of issue 4:

* none  - one model per class (`num_classes=0`, no `cond`);
* class - a label embedding added to the time embedding; index `num_classes` is the *null* label
  used for label dropout and classifier-free guidance;
* mask  - the mask channels are concatenated to the noisy image at the input (`cond`), at every
  denoising step, as in paper 002 variant 2 (Konz et al. 2024).

Upsampling is nearest-neighbour + 3x3 conv rather than a transposed conv: XLA:CPU lowers
transposed convolutions badly (STACK.md), and nearest + conv avoids checkerboard artefacts anyway.
GroupNorm group counts are clamped to a divisor of the channel count with >= 4 channels per
group, so tiny smoke models (e.g. 8 channels) stay valid and still see the embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn


def num_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= `max_groups` that divides `channels` and leaves at least 4
    channels per group. WHY the 4: with one channel per group GroupNorm is InstanceNorm and
    removes the per-channel shift by which the time/label embedding enters each ResBlock, so a
    tiny model would ignore t and the label (found by a test)."""
    for g in range(min(max_groups, max(1, channels // 4)), 0, -1):
        if channels % g == 0:
            return g
    return 1


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Transformer-style embedding of (possibly fractional) timesteps `t` (B,) -> (B, dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, with the (time [+ class]) embedding added in between."""

    out_channels: int
    dropout: float = 0.0
    max_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool) -> jax.Array:
        h = nn.GroupNorm(num_groups(x.shape[-1], self.max_groups), name="norm1")(x)
        h = nn.Conv(self.out_channels, (3, 3), name="conv1")(nn.silu(h))
        h = h + nn.Dense(self.out_channels, name="emb_proj")(nn.silu(emb))[:, None, None, :]
        h = nn.GroupNorm(num_groups(self.out_channels, self.max_groups), name="norm2")(h)
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
        # Zero-init the last conv: every block starts as the identity (improved-diffusion).
        h = nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros, name="conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = nn.Conv(self.out_channels, (1, 1), name="skip")(x)
        return x + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels of a (low-resolution) feature map."""

    num_heads: int = 4
    max_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        heads = self.num_heads if c % self.num_heads == 0 else 1
        h = nn.GroupNorm(num_groups(c, self.max_groups), name="norm")(x)
        qkv = nn.Dense(3 * c, name="qkv")(h.reshape(b, hgt * wid, c))
        # head-major (3, B, heads, N, d): both attention products are plain batched matmuls
        # (XLA:CPU ran the token-major output product 2-3x slower; docs/feature_spaces.md)
        q, k, v = qkv.reshape(b, hgt * wid, 3, heads, c // heads).transpose(2, 0, 3, 1, 4)
        scale = 1.0 / math.sqrt(c // heads)
        weights = jax.nn.softmax(jnp.einsum("bhnd,bhmd->bhnm", q, k) * scale, axis=-1)
        out = jnp.einsum("bhnm,bhmd->bhnd", weights, v).transpose(0, 2, 1, 3)
        out = out.reshape(b, hgt * wid, c)
        out = nn.Dense(c, kernel_init=nn.initializers.zeros, name="proj")(out)
        return x + out.reshape(b, hgt, wid, c)


class UNet(nn.Module):
    """Noise-prediction U-Net: `(x_t, t, labels?, cond?) -> (B, H, W, out_channels)`.

    Attributes:
      base_channels: channels of the first level; level i has `base_channels * channel_mults[i]`.
      channel_mults: one multiplier per resolution level (len = number of levels; the image side
        must be divisible by 2 ** (len - 1)).
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attention_resolutions: feature-map sides (pixels) at which self-attention is used.
      num_heads: attention heads.
      dropout: dropout inside residual blocks (training only).
      num_classes: 0 = no label input; >0 = class-conditional with a null label at `num_classes`.
      out_channels: 3 for RGB epsilon / v prediction.
      max_groups: the GroupNorm group count (clamped per layer to a divisor of the channels).
    """

    base_channels: int = 64
    channel_mults: Sequence[int] = (1, 2, 4, 8)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (16,)
    num_heads: int = 4
    dropout: float = 0.0
    num_classes: int = 0
    out_channels: int = 3
    max_groups: int = 32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        labels: jax.Array | None = None,
        cond: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array:
        levels = len(self.channel_mults)
        side = x.shape[1]
        if side % (2 ** (levels - 1)):
            raise ValueError(f"image side {side} not divisible by 2**{levels - 1} (channel_mults)")
        if cond is not None:
            x = jnp.concatenate([x, cond.astype(x.dtype)], axis=-1)

        emb_dim = 4 * self.base_channels
        emb = sinusoidal_embedding(t, self.base_channels)
        emb = nn.Dense(emb_dim, name="time_dense1")(emb)
        emb = nn.Dense(emb_dim, name="time_dense2")(nn.silu(emb))
        if self.num_classes > 0:
            if labels is None:
                labels = jnp.full((x.shape[0],), self.num_classes, jnp.int32)  # null label
            emb = emb + nn.Embed(self.num_classes + 1, emb_dim, name="label_embed")(labels)

        res = lambda ch, name: ResBlock(ch, self.dropout, self.max_groups, name=name)
        attn = lambda name: AttentionBlock(self.num_heads, self.max_groups, name=name)

        h = nn.Conv(self.base_channels, (3, 3), name="conv_in")(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mults):
            for i in range(self.num_res_blocks):
                h = res(self.base_channels * mult, f"down{level}_res{i}")(h, emb, train)
                if side in self.attention_resolutions:
                    h = attn(f"down{level}_attn{i}")(h)
                skips.append(h)
            if level != levels - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), name=f"down{level}_pool")(h)
                skips.append(h)
                side //= 2

        h = res(h.shape[-1], "mid_res0")(h, emb, train)
        h = attn("mid_attn")(h)
        h = res(h.shape[-1], "mid_res1")(h, emb, train)

        for level in reversed(range(levels)):
            mult = self.channel_mults[level]
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res(self.base_channels * mult, f"up{level}_res{i}")(h, emb, train)
                if side in self.attention_resolutions:
                    h = attn(f"up{level}_attn{i}")(h)
            if level != 0:
                b, hh, ww, c = h.shape
                h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method="nearest")
                h = nn.Conv(c, (3, 3), name=f"up{level}_upsample")(h)
                side *= 2

        h = nn.silu(nn.GroupNorm(num_groups(h.shape[-1], self.max_groups), name="norm_out")(h))
        return nn.Conv(
            self.out_channels, (3, 3), kernel_init=nn.initializers.zeros, name="conv_out"
        )(h)
