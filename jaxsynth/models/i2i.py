"""Image-to-image networks of pix2pix (Isola et al. 2017) and CycleGAN (Zhu et al. 2017).

* `UNetGenerator`: the pix2pix encoder-decoder. `num_downs` 4×4 stride-2 convs (LeakyReLU 0.2,
  instance norm except on the outermost and innermost), mirrored by 4×4 stride-2 transposed
  convs (ReLU, instance norm) whose outputs are concatenated with the encoder feature of the
  same resolution (the skip connections that carry the input's layout to the output). Dropout
  (0.5) on the `num_dropout` decoder blocks next to the bottleneck is pix2pix's only noise
  source ("dropout as noise"); `dropout=True` keeps it on when sampling, as pix2pix does.
* `ResnetGenerator`: CycleGAN's (and paper 004's) generator: 7×7 conv, two stride-2 downs,
  `num_blocks` residual blocks, two ups, 7×7 conv, tanh (reflection padding).
* `PatchDiscriminator`: the PatchGAN: `num_down` 4×4 stride-2 convs, one 4×4 stride-1 conv,
  then a 4×4 stride-1 conv to one logit per patch. With num_down = 3 each logit sees a 70×70
  input window (pix2pix at 256 px); `patchgan_depth(image_size)` scales that window to the tile
  (the depth whose receptive field is closest, in ratio, to 70/256 of the tile).

Norms are instance norms (never batch norm): a logit or a pixel depends only on its own image,
so results do not depend on the batch composition or the device sharding, and batch 1 works.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsynth.models.layers import Conv4x4S2, ConvTranspose4x4S2

_INIT = nn.initializers.normal(0.02)  # pix2pix / CycleGAN init
PIX2PIX_RF, PIX2PIX_SIZE = 70, 256  # the 70×70 PatchGAN at 256 px


def patchgan_layers(num_down: int) -> list[tuple[int, int]]:
    """(kernel, stride) of every conv of a PatchGAN with `num_down` stride-2 convs."""
    return [(4, 2)] * num_down + [(4, 1), (4, 1)]


def receptive_field(layers: list[tuple[int, int]]) -> int:
    """Side of the input window one output unit sees: 1 + Σ (k_i - 1) · Π_{j<i} s_j."""
    rf, jump = 1, 1
    for k, s in layers:
        rf += (k - 1) * jump
        jump *= s
    return rf


def patchgan_depth(image_size: int, max_down: int = 5) -> int:
    """The `num_down` whose receptive field / tile side is closest (log ratio) to 70 / 256."""
    target = PIX2PIX_RF / PIX2PIX_SIZE
    best = min(
        range(max_down + 1),
        key=lambda n: abs(
            math.log(receptive_field(patchgan_layers(n)) / image_size) - math.log(target)
        ),
    )
    # the patch map must stay at least 1×1: S / 2^n - 2 >= 1
    while best > 0 and image_size // 2**best - 2 < 1:
        best -= 1
    return best


def _norm(kind: str, name: str):
    if kind == "instance":
        return nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-5, name=name)
    if kind == "none":
        return lambda h: h
    raise ValueError(f"unknown norm '{kind}' (instance | none)")


class UNetGenerator(nn.Module):
    """(B, S, S, C_in) -> (B, S, S, out_channels) in [-1, 1]; S divisible by 2**num_downs."""

    out_channels: int = 3
    base_width: int = 64
    max_width: int = 512
    num_downs: int = 5
    dropout: float = 0.5
    num_dropout: int = 3
    norm: str = "instance"

    @nn.compact
    def __call__(self, x: jax.Array, *, dropout: bool = False) -> jax.Array:
        n = self.num_downs
        if n < 2 or x.shape[1] % 2**n or x.shape[2] % 2**n:
            raise ValueError(
                f"U-Net with num_downs={n} needs a tile side divisible by {2**n}, got {x.shape}"
            )
        widths = [min(self.max_width, self.base_width * 2**i) for i in range(n)]
        skips, h = [], x
        for i in range(n):
            if i > 0:
                h = nn.leaky_relu(h, 0.2)
            h = Conv4x4S2(widths[i], kernel_init=_INIT, name=f"down{i}")(h)
            if 0 < i < n - 1:
                h = _norm(self.norm, f"down{i}_norm")(h)
            skips.append(h)
        for i in reversed(range(1, n)):  # decoder block i upsamples to the resolution of down{i-1}
            h = nn.relu(h)
            h = ConvTranspose4x4S2(widths[i - 1], use_bias=False, kernel_init=_INIT, name=f"up{i}")(
                h
            )
            h = _norm(self.norm, f"up{i}_norm")(h)
            depth = n - 1 - i  # 0 = the block next to the bottleneck
            if 0 < depth <= self.num_dropout and self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not dropout)(h)
            h = jnp.concatenate([skips[i - 1], h], axis=-1)
        h = nn.relu(h)
        h = ConvTranspose4x4S2(self.out_channels, kernel_init=_INIT, name="up0")(h)
        return jnp.tanh(h)


def _reflect(h: jax.Array, p: int) -> jax.Array:
    return jnp.pad(h, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


class ResnetGenerator(nn.Module):
    """CycleGAN's generator: (B, S, S, C_in) -> (B, S, S, out_channels) in [-1, 1], S % 4 == 0."""

    out_channels: int = 3
    base_width: int = 64
    num_blocks: int = 9
    norm: str = "instance"

    @nn.compact
    def __call__(self, x: jax.Array, *, dropout: bool = False) -> jax.Array:
        del dropout  # no dropout in CycleGAN's generator; the argument keeps one signature
        w = self.base_width
        h = nn.Conv(w, (7, 7), padding="VALID", kernel_init=_INIT, name="stem")(_reflect(x, 3))
        h = nn.relu(_norm(self.norm, "stem_norm")(h))
        for i, width in enumerate((2 * w, 4 * w)):
            h = nn.Conv(width, (3, 3), (2, 2), padding=((1, 1), (1, 1)), kernel_init=_INIT,
                        name=f"down{i}")(h)  # fmt: skip
            h = nn.relu(_norm(self.norm, f"down{i}_norm")(h))
        for b in range(self.num_blocks):
            r = nn.Conv(4 * w, (3, 3), padding="VALID", kernel_init=_INIT, name=f"res{b}_a")(
                _reflect(h, 1)
            )
            r = nn.relu(_norm(self.norm, f"res{b}_a_norm")(r))
            r = nn.Conv(4 * w, (3, 3), padding="VALID", kernel_init=_INIT, name=f"res{b}_b")(
                _reflect(r, 1)
            )
            h = h + _norm(self.norm, f"res{b}_b_norm")(r)
        for i, width in enumerate((2 * w, w)):
            h = ConvTranspose4x4S2(width, use_bias=False, kernel_init=_INIT, name=f"up{i}")(h)
            h = nn.relu(_norm(self.norm, f"up{i}_norm")(h))
        h = nn.Conv(self.out_channels, (7, 7), padding="VALID", kernel_init=_INIT, name="head")(
            _reflect(h, 3)
        )
        return jnp.tanh(h)


class PatchDiscriminator(nn.Module):
    """(B, S, S, C) -> patch logits (B, S / 2**num_down - 2, same, 1)."""

    base_width: int = 64
    max_width: int = 512
    num_down: int = 3
    norm: str = "instance"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for i in range(self.num_down):
            width = min(self.max_width, self.base_width * 2**i)
            h = Conv4x4S2(width, kernel_init=_INIT, name=f"down{i}")(h)
            if i > 0:
                h = _norm(self.norm, f"down{i}_norm")(h)
            h = nn.leaky_relu(h, 0.2)
        width = min(self.max_width, self.base_width * 2**self.num_down)
        h = nn.Conv(width, (4, 4), padding=((1, 1), (1, 1)), kernel_init=_INIT, name="conv")(h)
        if self.num_down > 0:
            h = _norm(self.norm, "conv_norm")(h)
        h = nn.leaky_relu(h, 0.2)
        return nn.Conv(1, (4, 4), padding=((1, 1), (1, 1)), kernel_init=_INIT, name="logits")(h)


def make_generator(model_cfg, out_channels: int = 3) -> nn.Module:
    """The generator named by `model_cfg.generator` ("unet" | "resnet") from its config keys."""
    if model_cfg.generator == "unet":
        return UNetGenerator(
            out_channels=out_channels,
            base_width=int(model_cfg.g_base_width),
            max_width=int(model_cfg.g_max_width),
            num_downs=int(model_cfg.num_downs),
            dropout=float(model_cfg.dropout),
            num_dropout=int(model_cfg.num_dropout),
            norm=model_cfg.norm,
        )
    if model_cfg.generator == "resnet":
        return ResnetGenerator(
            out_channels=out_channels,
            base_width=int(model_cfg.g_base_width),
            num_blocks=int(model_cfg.num_blocks),
            norm=model_cfg.norm,
        )
    raise ValueError(f"model.generator='{model_cfg.generator}': use unet | resnet")


def make_discriminator(model_cfg, image_size: int) -> PatchDiscriminator:
    """PatchGAN from `model_cfg` (`d_num_down` < 0: scaled to the tile by `patchgan_depth`)."""
    n = int(model_cfg.d_num_down)
    return PatchDiscriminator(
        base_width=int(model_cfg.d_base_width),
        max_width=int(model_cfg.d_max_width),
        num_down=patchgan_depth(image_size) if n < 0 else n,
        norm=model_cfg.norm,
    )
