"""A fast 4×4 stride-2 transposed convolution (the GAN upsampling layer) for XLA:CPU.

WHY: flax `nn.ConvTranspose` lowers to a convolution with input (lhs) dilation; XLA:CPU runs that
and, worse, its gradients very slowly (a DCGAN step was ~12× slower than PyTorch:
bench/conv_transpose_bench.py, BENCHMARKS.md). The same linear map can be written with ordinary
stride-1 convolutions, which XLA:CPU lowers well, in two ways:

* ``"phase"`` (sub-pixel / per-phase): output pixel (2m+a, 2n+b) only ever sees the kernel taps
  W[a::2, b::2] (a 2×2 sub-kernel), so the layer is four stride-1 2×2 convolutions whose outputs
  are interleaved (depth-to-space). Gradients are those of stride-1 convs. No wasted FLOPs.
* ``"vjp"``: a transposed conv IS the input-gradient of a strided conv, so forward = that VJP, and
  a custom VJP gives the backward pass as a forward strided conv (for dx) and a strided conv's
  kernel gradient (for dW), both lowered well.
* ``"lax"``: `jax.lax.conv_transpose` itself (the reference, and the fastest on some GPUs).

All three compute exactly the same function (tested against `lax.conv_transpose` and
`nn.ConvTranspose`): with kernel W of shape (4, 4, Cin, Cout) (HWIO, no flip) and padding 2 on
every side of the dilated input, an (H, W) input becomes (2H, 2W) — PyTorch's
`ConvTranspose2d(k=4, s=2, p=1)` up to the kernel flip.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("phase", "vjp", "lax")
_DN = ("NHWC", "HWIO", "NHWC")
_LAX_PADDING = ((2, 2), (2, 2))


def conv_transpose_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Reference: `lax.conv_transpose`, stride 2, padding 2 per side (output 2H × 2W)."""
    return lax.conv_transpose(x, kernel, (2, 2), _LAX_PADDING, dimension_numbers=_DN)


def conv_transpose_phase(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Four stride-1 2×2 convolutions (one per output phase), interleaved."""
    pads = {0: (1, 0), 1: (0, 1)}  # phase 0 sees x[m-1], x[m]; phase 1 sees x[m], x[m+1]
    rows = []
    for a in (0, 1):
        cols = []
        for b in (0, 1):
            sub = kernel[a::2, b::2]  # (2, 2, Cin, Cout)
            cols.append(
                lax.conv_general_dilated(x, sub, (1, 1), (pads[a], pads[b]), dimension_numbers=_DN)
            )
        rows.append(jnp.stack(cols, axis=3))  # (B, H, W, 2[b], C)
    y = jnp.stack(rows, axis=2)  # (B, H, 2[a], W, 2[b], C)
    bsz, h, _, w, _, c = y.shape
    return y.reshape(bsz, 2 * h, 2 * w, c)


def _strided_conv(z: jax.Array, kernel_t: jax.Array) -> jax.Array:
    """The forward conv whose input-gradient is our transposed conv: (2H,2W,Cout) -> (H,W,Cin)."""
    return lax.conv_general_dilated(z, kernel_t, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN)


def _kernel_t(kernel: jax.Array) -> jax.Array:
    # correlation with W over the dilated input == adjoint of strided correlation with flip(W)^T
    return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


def _transpose_via_vjp(x: jax.Array, kernel: jax.Array) -> jax.Array:
    bsz, h, w, _ = x.shape
    z = jnp.zeros((bsz, 2 * h, 2 * w, kernel.shape[3]), x.dtype)
    _, pullback = jax.vjp(lambda zz: _strided_conv(zz, _kernel_t(kernel)), z)
    return pullback(x)[0]


@jax.custom_vjp
def conv_transpose_vjp(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Transposed conv written as the input-VJP of a strided conv, with a hand-written VJP."""
    return _transpose_via_vjp(x, kernel)


def _vjp_fwd(x, kernel):
    return _transpose_via_vjp(x, kernel), (x, kernel)


def _vjp_bwd(res, dy):
    x, kernel = res
    kt = _kernel_t(kernel)
    dx = _strided_conv(dy, kt)  # adjoint of the adjoint: the forward strided conv
    # <dy, T(x, W)> = <x, S(dy, W^t)>: dW^t is the kernel-gradient of S at input dy, cotangent x
    _, pull_k = jax.vjp(lambda k: _strided_conv(dy, k), kt)
    dkt = pull_k(x)[0]
    dkernel = jnp.flip(dkt.swapaxes(2, 3), (0, 1))
    return dx, dkernel


conv_transpose_vjp.defvjp(_vjp_fwd, _vjp_bwd)

_IMPL_FNS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "phase": conv_transpose_phase,
    "vjp": conv_transpose_vjp,
    "lax": conv_transpose_lax,
}


def conv_transpose_4x4_s2(x: jax.Array, kernel: jax.Array, impl: str = "phase") -> jax.Array:
    """Dispatch to one of `IMPLS`; all give the same result (see module docstring)."""
    if impl not in _IMPL_FNS:
        raise ValueError(f"conv_transpose impl '{impl}' is not one of {IMPLS}")
    return _IMPL_FNS[impl](x, kernel)


class ConvTranspose4x4S2(nn.Module):
    """Drop-in 2× upsampling layer: 4×4 kernel, stride 2, (H, W) -> (2H, 2W).

    Parameters are named like `nn.ConvTranspose` (`kernel` (4,4,Cin,Cout), `bias`), so checkpoints
    do not depend on `impl`.
    """

    features: int
    use_bias: bool = True
    impl: str = "phase"
    kernel_init: Callable = nn.initializers.normal(0.02)  # DCGAN init (Radford et al.)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
        y = conv_transpose_4x4_s2(x, kernel.astype(x.dtype), self.impl)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
        return y


conv_transpose_4x4_s2_jit = partial(jax.jit, static_argnames="impl")(conv_transpose_4x4_s2)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max pooling, stride 2, VALID (odd trailing rows/columns dropped), NHWC.

    WHY: equal to `nn.max_pool(x, (2, 2), strides=(2, 2))`, but written as a reshape + max, whose
    gradient is an elementwise mask instead of XLA's `select_and_scatter`; on XLA:CPU that
    backward pass was 60 % of paper 000's CNN train step (9.8 vs 26.8 ms at batch 32, 32 px).
    Gradients differ only where a window holds tied maxima (shared instead of first-wins).
    """
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, : 2 * h2, : 2 * w2].reshape(b, h2, 2, w2, 2, c).max(axis=(2, 4))


# ----------------------------------------------------------------------------- 4×4 stride-2 conv
# The critic's downsampling conv (4×4, stride 2, padding 1). Its forward pass and first-order
# gradients are fast on XLA:CPU as a plain strided convolution ("lax"). The WGAN-GP penalty,
# however, differentiates the critic's INPUT-gradient with respect to the kernel (a gradient of
# a gradient), and XLA:CPU lowers that second-order convolution very slowly: 2.8 s for one
# 32→16-px layer of 64→128 channels at batch 32, against 0.23 s for the same maths written as
# space-to-depth + four shifted slices + ONE matmul ("im2col"), whose every derivative is again
# a slice, a pad or a matmul (bench/strided_conv_bench.py prints both). The forward
# is ~3× slower as im2col, so the GAN task uses "im2col" only inside the penalty.
STRIDED_IMPLS = ("lax", "im2col")


def conv_4x4_s2_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Reference: (B, H, W, Cin) -> (B, H/2, W/2, Cout), kernel HWIO (4, 4, Cin, Cout)."""
    return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN)


def conv_4x4_s2_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The same conv as one matmul over (2×2 blocks of the padded input) × (2×2 taps).

    Padded input xp, block index (i, j), in-block offset (a, b): xp[2i+a, 2j+b]. Tap
    (u, v) = (2p+a, 2q+b) of output (i, j) reads block (i+p, j+q) at offset (a, b), so the patch
    of output (i, j) is the four blocks (i+p, j+q), p, q in {0, 1}, each flattened (a, b, c).
    """
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"conv_4x4_s2_im2col needs even sizes, got {h}x{w}")
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    hb, wb = h // 2 + 1, w // 2 + 1
    blocks = xp.reshape(b, hb, 2, wb, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hb, wb, 4 * c)
    ho, wo = h // 2, w // 2
    cols = jnp.concatenate(
        [blocks[:, p : p + ho, q : q + wo] for p in (0, 1) for q in (0, 1)], axis=-1
    )
    cout = kernel.shape[-1]
    k = kernel.reshape(2, 2, 2, 2, c, cout).transpose(0, 2, 1, 3, 4, 5).reshape(16 * c, cout)
    return jnp.einsum("bhwk,ko->bhwo", cols, k)


def conv_4x4_s2(x: jax.Array, kernel: jax.Array, impl: str = "lax") -> jax.Array:
    """Dispatch to one of `STRIDED_IMPLS`; both compute the same function."""
    if impl == "lax":
        return conv_4x4_s2_lax(x, kernel)
    if impl == "im2col":
        return conv_4x4_s2_im2col(x, kernel)
    raise ValueError(f"strided conv impl '{impl}' is not one of {STRIDED_IMPLS}")


class Conv4x4S2(nn.Module):
    """2× downsampling conv: 4×4 kernel, stride 2, padding 1. Parameters are named and shaped
    like `nn.Conv(features, (4, 4), (2, 2), padding=1)` (`kernel`, `bias`), so one parameter
    tree serves both implementations."""

    features: int
    impl: str = "lax"
    kernel_init: Callable = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return conv_4x4_s2(x, kernel.astype(x.dtype), self.impl) + bias.astype(x.dtype)
