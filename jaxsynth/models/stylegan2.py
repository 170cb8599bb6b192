"""StyleGAN2 (Karras et al. 2020) generator and discriminator in Flax linen, as in StyleGAN2-ADA.

* Mapping: z (2nd-moment normalised) ‖ embed(one-hot label) (normalised) -> `num_layers` FC
  layers with equalised learning rate and a learning-rate multiplier (0.01) -> w.
* Synthesis ("skip" generator): learned 4×4 constant, per resolution two modulated/demodulated
  3×3 convolutions (the first upsampling), per-pixel noise with a learned strength, and a
  modulated 1×1 toRGB whose outputs are upsampled and summed across resolutions.
* Discriminator ("resnet"): fromRGB, residual blocks (two 3×3 convs ‖ a 1×1 skip, both halving
  the resolution, summed with gain √½), minibatch-stddev, conv, FC, output; conditional by
  projection onto a mapped label embedding (cmap).

Every weight is stored N(0, 1) and scaled at run time by 1/√fan_in (equalised learning rate), so
Adam's per-parameter step is the same in every layer.

Resampling is the [1, 3, 3, 1] FIR of upfirdn2d written per output phase with slices and adds
(`upsample_2x`, `downsample_2x`), which XLA fuses into neighbouring element-wise ops; there are no
custom kernels and no strided or transposed convolutions (whose gradients, and R1's second
derivatives, XLA:CPU runs slowly, see models/layers.py). Consequences, documented deviations:
G's up-conv is FIR-upsample then a stride-1 3×3 conv (the official transposed conv + blur is the
same linear map up to border handling, at 4× the conv FLOPs); D's down-conv is FIR-downsample
then a stride-1 3×3 conv at the lower resolution (the official conv is stride-2 after the blur).
The modulated convolution is the "non-fused" form (scale input channels, one shared conv, scale
output channels), mathematically identical to per-sample weights (tested).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")
SQRT2 = math.sqrt(2.0)


def lrelu(x: jax.Array) -> jax.Array:
    """Leaky ReLU 0.2 with StyleGAN's gain √2 (keeps activations' scale through the layers)."""
    return jax.nn.leaky_relu(x, 0.2) * SQRT2


def check_resolution(image_size: int) -> int:
    """log2(image_size) for a power of two in [32, 256]; ValueError otherwise."""
    lg = math.log2(image_size) if image_size > 0 else -1
    if image_size < 32 or image_size > 256 or lg != int(lg):
        raise ValueError(f"image_size={image_size}: StyleGAN2 needs a power of two from 32 to 256")
    return int(lg)


def num_ws(image_size: int) -> int:
    """How many w vectors the synthesis network takes: 2 per resolution, from 4×4 to the top."""
    return 2 * check_resolution(image_size) - 2


def channels(res: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // res, channel_max)


# ----------------------------------------------------------------------------- FIR resampling
def _shift(x: jax.Array, axis: int, by: int) -> jax.Array:
    """x shifted by `by` (±1) along `axis` with a zero fill: out[i] = x[i - by]."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 0) if by > 0 else (0, 1)
    sl = (
        lax.slice_in_dim(x, 0, n - 1, axis=axis) if by > 0 else lax.slice_in_dim(x, 1, n, axis=axis)
    )
    return jnp.pad(sl, pad)


def _up_axis(x: jax.Array, axis: int) -> jax.Array:
    even = 0.25 * _shift(x, axis, 1) + 0.75 * x  # out[2i]   = ¼ x[i-1] + ¾ x[i]
    odd = 0.75 * x + 0.25 * _shift(x, axis, -1)  # out[2i+1] = ¾ x[i] + ¼ x[i+1]
    y = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] *= 2
    return y.reshape(shape)


def _down_axis(x: jax.Array, axis: int) -> jax.Array:
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis : axis + 1] = [n // 2, 2]
    pairs = x.reshape(shape)
    a = lax.index_in_dim(pairs, 0, axis + 1, keepdims=False)  # x[2i]
    b = lax.index_in_dim(pairs, 1, axis + 1, keepdims=False)  # x[2i+1]
    # out[i] = (x[2i-1] + 3 x[2i] + 3 x[2i+1] + x[2i+2]) / 8
    return (_shift(b, axis, 1) + 3.0 * a + 3.0 * b + _shift(a, axis, -1)) * 0.125


def upsample_2x(x: jax.Array) -> jax.Array:
    """upfirdn2d(x, [1,3,3,1], up=2) with StyleGAN2's padding (NHWC, H and W doubled)."""
    return _up_axis(_up_axis(x, 1), 2)


def downsample_2x(x: jax.Array) -> jax.Array:
    """upfirdn2d(x, [1,3,3,1], down=2) with StyleGAN2's padding (NHWC, even H and W halved)."""
    return _down_axis(_down_axis(x, 1), 2)


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


# ----------------------------------------------------------------------------- layers
class EqualDense(nn.Module):
    """Fully connected, equalised lr: W ~ N(0, 1/lr_mul²) used as W·lr_mul/√fan_in."""

    features: int
    lr_mul: float = 1.0
    bias_init: float = 0.0
    activation: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        w = self.param("kernel", nn.initializers.normal(1.0 / self.lr_mul), (fan_in, self.features))
        b = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
        y = x @ (w * (self.lr_mul / math.sqrt(fan_in))) + b * self.lr_mul
        return lrelu(y) if self.activation else y


class EqualConv(nn.Module):
    """k×k stride-1 SAME conv with equalised lr (and optional bias + lrelu)."""

    features: int
    kernel: int = 3
    use_bias: bool = True
    activation: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, cin = self.kernel, x.shape[-1]
        w = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
        y = lax.conv_general_dilated(
            x, w * (1.0 / math.sqrt(cin * k * k)), (1, 1), "SAME", dimension_numbers=_DN
        )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return lrelu(y) if self.activation else y


def modulated_conv(
    x: jax.Array, weight: jax.Array, styles: jax.Array, demodulate: bool = True
) -> jax.Array:
    """Per-sample weights W_b = W · s_b (input channels), demodulated to unit norm per output
    channel, computed as (x·s) ⊛ W · d with ONE shared convolution (no grouped conv).

    x (B,H,W,Cin), weight (k,k,Cin,Cout), styles (B,Cin) -> (B,H,W,Cout), SAME padding."""
    y = lax.conv_general_dilated(
        x * styles[:, None, None, :], weight, (1, 1), "SAME", dimension_numbers=_DN
    )
    if demodulate:
        # Σ_{kh,kw,i} (W[.,.,i,o] s_i)² = (s²) @ Σ_{kh,kw} W²
        d = lax.rsqrt(jnp.square(styles) @ jnp.sum(jnp.square(weight), axis=(0, 1)) + 1e-8)
        y = y * d[:, None, None, :]
    return y


class ModulatedConv(nn.Module):
    """Style-modulated conv: affine(w) -> styles (bias 1), then `modulated_conv`."""

    features: int
    kernel: int = 3
    demodulate: bool = True
    up: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        k, cin = self.kernel, x.shape[-1]
        styles = EqualDense(cin, bias_init=1.0, name="affine")(w)
        weight = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
        if self.up:
            x = upsample_2x(x)
        return modulated_conv(x, weight * (1.0 / math.sqrt(cin * k * k)), styles, self.demodulate)


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv + per-pixel noise (learned strength, init 0) + bias + lrelu."""

    features: int
    up: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        x = ModulatedConv(self.features, 3, True, self.up, name="conv")(x, w)
        strength = self.param("noise_strength", nn.initializers.zeros, ())
        noise = jax.random.normal(self.make_rng("noise"), (*x.shape[:3], 1), x.dtype)
        x = x + noise * strength
        return lrelu(x + self.param("bias", nn.initializers.zeros, (self.features,)))


class MappingNetwork(nn.Module):
    """z ‖ label embedding -> w (FC stack with lr multiplier). z_dim = 0: label only (D's cmap)."""

    w_dim: int
    num_classes: int = 0
    num_layers: int = 8
    lr_mul: float = 0.01

    @nn.compact
    def __call__(self, z: jax.Array | None, labels: jax.Array | None) -> jax.Array:
        parts = []
        if z is not None:
            parts.append(normalize_2nd_moment(z))
        if self.num_classes > 0:
            onehot = jax.nn.one_hot(labels, self.num_classes)
            parts.append(normalize_2nd_moment(EqualDense(self.w_dim, name="embed")(onehot)))
        x = jnp.concatenate(parts, axis=-1)
        for i in range(self.num_layers):
            x = EqualDense(self.w_dim, self.lr_mul, activation=True, name=f"fc{i}")(x)
        return x


class Synthesis(nn.Module):
    """ws (B, num_ws, w_dim) -> image (B, size, size, 3), linear output (about [-1, 1])."""

    image_size: int
    channel_base: int
    channel_max: int

    @nn.compact
    def __call__(self, ws: jax.Array) -> jax.Array:
        lg = check_resolution(self.image_size)
        ch = lambda r: channels(r, self.channel_base, self.channel_max)  # noqa: E731
        b = ws.shape[0]
        const = self.param("const", nn.initializers.normal(1.0), (4, 4, ch(4)))
        x = jnp.broadcast_to(const, (b, 4, 4, ch(4)))
        x = SynthesisLayer(ch(4), name="b4_conv1")(x, ws[:, 0])
        img = self._to_rgb(x, ws[:, 1], "b4_torgb")
        idx = 1
        for lr in range(3, lg + 1):
            r = 2**lr
            x = SynthesisLayer(ch(r), up=True, name=f"b{r}_conv0")(x, ws[:, idx])
            x = SynthesisLayer(ch(r), name=f"b{r}_conv1")(x, ws[:, idx + 1])
            img = upsample_2x(img) + self._to_rgb(x, ws[:, idx + 2], f"b{r}_torgb")
            idx += 2
        return img

    def _to_rgb(self, x: jax.Array, w: jax.Array, name: str) -> jax.Array:
        y = ModulatedConv(3, 1, demodulate=False, name=name)(x, w)
        return y + self.param(f"{name}_bias", nn.initializers.zeros, (3,))


class Generator(nn.Module):
    """Mapping + synthesis. `__call__(z, labels)`; `map(z, labels)` -> w; `synthesize(ws)`."""

    image_size: int
    z_dim: int = 512
    w_dim: int = 512
    num_classes: int = 0
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    channel_base: int = 16384
    channel_max: int = 512

    def setup(self) -> None:
        self.mapping = MappingNetwork(
            self.w_dim, self.num_classes, self.mapping_layers, self.mapping_lr_mul
        )
        self.synthesis = Synthesis(self.image_size, self.channel_base, self.channel_max)

    @property
    def num_ws(self) -> int:
        return num_ws(self.image_size)

    def map(self, z: jax.Array, labels: jax.Array | None) -> jax.Array:
        return self.mapping(z, labels)

    def synthesize(self, ws: jax.Array) -> jax.Array:
        return self.synthesis(ws)

    def __call__(self, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        w = self.mapping(z, labels)
        return self.synthesis(jnp.repeat(w[:, None], self.num_ws, axis=1))


def minibatch_stddev(x: jax.Array, group: int, num_channels: int = 1) -> jax.Array:
    """Append the std over groups of `group` samples (averaged over pixels and channels) as
    `num_channels` feature maps: D sees a batch statistic, which penalises low diversity."""
    b, h, w, c = x.shape
    g = min(group, b)
    f = num_channels
    y = x.reshape(g, b // g, h, w, f, c // f)
    y = y - y.mean(axis=0)
    y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)  # (b/g, h, w, f, c/f)
    y = y.mean(axis=(1, 2, 4))  # (b/g, f)
    y = jnp.tile(y, (g, 1))[:, None, None, :]  # sample i gets group stat i % (b/g)
    return jnp.concatenate([x, jnp.broadcast_to(y, (b, h, w, f))], axis=-1)


class Discriminator(nn.Module):
    """Residual D; logits (B,). Conditional: projection onto cmap = mapping(label)."""

    image_size: int
    num_classes: int = 0
    channel_base: int = 16384
    channel_max: int = 512
    mbstd_group: int = 4
    mbstd_channels: int = 1
    mapping_layers: int = 8
    cmap_dim: int = 512

    @nn.compact
    def __call__(self, img: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        lg = check_resolution(self.image_size)
        ch = lambda r: channels(r, self.channel_base, self.channel_max)  # noqa: E731
        x = EqualConv(ch(self.image_size), 1, name="fromrgb")(img)
        for lr in range(lg, 2, -1):
            r = 2**lr
            skip = EqualConv(ch(r // 2), 1, False, False, name=f"b{r}_skip")(downsample_2x(x))
            x = EqualConv(ch(r), 3, name=f"b{r}_conv0")(x)
            x = EqualConv(ch(r // 2), 3, name=f"b{r}_conv1")(downsample_2x(x))
            x = (skip + x) * math.sqrt(0.5)
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        x = EqualConv(ch(4), 3, name="b4_conv")(x)
        x = EqualDense(ch(4), activation=True, name="b4_fc")(x.reshape(x.shape[0], -1))
        if self.num_classes <= 0:
            return EqualDense(1, name="b4_out")(x)[:, 0]
        out = EqualDense(self.cmap_dim, name="b4_out")(x)
        cmap = MappingNetwork(self.cmap_dim, self.num_classes, self.mapping_layers, name="cmap")(
            None, labels
        )
        return jnp.sum(out * cmap, axis=-1) / math.sqrt(self.cmap_dim)
