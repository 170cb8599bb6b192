"""GAN generator and discriminator (Flax linen), one configurable pair for the three seed GANs.

* DCGAN (paper 000, Radford et al.): dense projection of 100-d noise to 4×4, then 4×4 stride-2
  transposed convs with BatchNorm + ReLU, halving the width each time, tanh at the end. D mirrors
  it with 4×4 stride-2 convs, LeakyReLU 0.2 and dropout (paper 000 used dropout in D).
* cGAN (paper 003): a 1,500-d latent concatenated with the one-hot label, projected and reshaped,
  then 5 transposed convs (4×4, 128 filters, stride 2) each followed by LeakyReLU 0.2, tanh on the
  last; D of 5 conv blocks (4×4, stride 2, LeakyReLU), label-conditioned by projection
  (Miyato & Koyama 2018: logit += <embed(y), features>).
* WGAN-GP (paper 004): the DCGAN pair without BatchNorm in the critic (the gradient penalty is
  per-sample, which batch statistics would break); LayerNorm or nothing instead.

Any power-of-two resolution from 16 to 256 works: the number of 2× stages is log2(size / 4).
Widths: stage at resolution r has min(max_width, base_width · size / (2r)) channels, so
base_width=max_width gives paper 003's constant 128 filters, and base 64 / max 512 the classic
DCGAN 512-256-128-64 pyramid at 64 px.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsynth.models.layers import Conv4x4S2, ConvTranspose4x4S2

_INIT = nn.initializers.normal(0.02)


def num_stages(image_size: int) -> int:
    """Number of 2× stages between 4×4 and `image_size` (a power of two in [16, 256])."""
    stages = math.log2(image_size / 4) if image_size > 0 else -1
    if image_size < 16 or image_size > 256 or stages != int(stages):
        raise ValueError(f"image_size={image_size}: GANs need a power of two from 16 to 256")
    return int(stages)


def stage_width(resolution: int, image_size: int, base_width: int, max_width: int) -> int:
    return int(min(max_width, base_width * image_size // (2 * resolution)))


def _act(name: str, x: jax.Array) -> jax.Array:
    if name == "relu":
        return nn.relu(x)
    if name == "leaky_relu":
        return nn.leaky_relu(x, 0.2)
    raise ValueError(f"unknown activation '{name}' (relu | leaky_relu)")


class Generator(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> images (B, S, S, 3) in [-1, 1].

    `num_classes > 0` makes it conditional: the one-hot label is concatenated to z (paper 003).
    `norm` is "batch" (DCGAN) or "none" (paper 003's plain LeakyReLU stack).
    """

    image_size: int = 64
    latent_dim: int = 100
    num_classes: int = 0
    base_width: int = 64
    max_width: int = 512
    activation: str = "relu"
    norm: str = "batch"
    upsample_impl: str = "phase"
    channels: int = 3

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = True):
        stages = num_stages(self.image_size)
        h = z
        if self.num_classes > 0:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            h = jnp.concatenate([h, jax.nn.one_hot(labels, self.num_classes, dtype=h.dtype)], -1)
        width = stage_width(4, self.image_size, self.base_width, self.max_width)
        h = nn.Dense(4 * 4 * width, kernel_init=_INIT, name="project")(h)
        h = h.reshape(h.shape[0], 4, 4, width)
        h = self._norm_act(h, train, "project_norm")
        res = 4
        for i in range(stages):
            res *= 2
            last = i == stages - 1
            feats = (
                self.channels
                if last
                else stage_width(res, self.image_size, self.base_width, self.max_width)
            )
            h = ConvTranspose4x4S2(
                feats,
                use_bias=last or self.norm == "none",
                impl=self.upsample_impl,
                name=f"up{i}",
            )(h)
            if not last:
                h = self._norm_act(h, train, f"up{i}_norm")
        return jnp.tanh(h)

    def _norm_act(self, h: jax.Array, train: bool, name: str) -> jax.Array:
        if self.norm == "batch":
            h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)(h)
        elif self.norm != "none":
            raise ValueError(f"unknown generator norm '{self.norm}' (batch | none)")
        return _act(self.activation, h)


class Discriminator(nn.Module):
    """images (B, S, S, 3) [+ labels] -> logits (B,).

    Stages of 4×4 stride-2 conv + (norm) + LeakyReLU 0.2 (+ dropout) down to 4×4, then a dense
    logit. `num_classes > 0` adds the projection term <embed(y), features>. `norm` is "none" or
    "layer" (never batch: it would couple the samples, which breaks the WGAN-GP penalty and
    makes multi-device results depend on the sharding).
    """

    image_size: int = 64
    num_classes: int = 0
    base_width: int = 64
    max_width: int = 512
    norm: str = "none"
    dropout: float = 0.0
    conv_impl: str = "lax"  # "im2col": fast second-order gradients (models/layers.py)

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, *, train: bool = True):
        stages = num_stages(self.image_size)
        h = x
        res = self.image_size
        for i in range(stages):
            res //= 2
            width = stage_width(res, self.image_size, self.base_width, self.max_width)
            h = Conv4x4S2(width, impl=self.conv_impl, kernel_init=_INIT, name=f"down{i}")(h)
            if self.norm == "layer" and i > 0:
                h = nn.LayerNorm(name=f"down{i}_norm")(h)
            elif self.norm not in ("none", "layer"):
                raise ValueError(f"unknown discriminator norm '{self.norm}' (none | layer)")
            h = nn.leaky_relu(h, 0.2)
            if self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
        features = h.reshape(h.shape[0], -1)
        logit = nn.Dense(1, kernel_init=_INIT, name="logit")(features)[:, 0]
        if self.num_classes > 0:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            embed = nn.Embed(
                self.num_classes, features.shape[-1], embedding_init=_INIT, name="label_embed"
            )(labels)
            logit = logit + jnp.sum(embed * features, axis=-1)
        return logit
