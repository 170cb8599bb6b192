"""PyTorch twin of jaxsynth's StyleGAN2-ADA training step, for bench/stylegan2_bench.py (runs
under any torch venv; plain PyTorch ops, no custom CUDA/C++ kernels, imports only torch + numpy).

Same networks as jaxsynth/models/stylegan2.py, parameter for parameter (same names, same
shapes up to layout; `load_jax` copies a jaxsynth parameter dict in and the test checks that the
outputs agree):

* mapping: z (2nd-moment normalised) ‖ normalised label embedding -> FC stack, equalised lr,
  lr multiplier 0.01, lrelu·√2;
* synthesis ("skip" G): learned 4×4 constant; per resolution a modulated/demodulated 3×3 conv
  after a [1,3,3,1] FIR 2× upsample, a second modulated 3×3 conv, per-pixel noise with a learned
  strength, bias + lrelu; modulated 1×1 toRGB (no demodulation), upsampled and summed;
* modulated conv in the same NON-fused form as jaxsynth (and as stylegan2-ada-pytorch in
  training): scale the input channels by the styles, ONE shared conv, scale the output channels
  by the demodulation coefficients rsqrt(s² @ ΣW² + 1e-8) — no grouped conv on either side;
* residual D: fromRGB 1×1; blocks of 3×3 conv, FIR 2× downsample, 3×3 conv, ‖ FIR downsample +
  1×1 skip, summed with gain √½; minibatch-stddev (group 4, 1 channel); 3×3 conv; FC; output
  (projection onto the cmap mapping when conditional).

The FIR resampling is the same linear map as jaxsynth's (StyleGAN2's upfirdn2d padding). By
default (`fir: "conv"`) it is written the way a PyTorch user would: ONE depthwise op per
resample (conv_transpose2d stride 2 for up, conv2d stride 2 for down, with the [1,3,3,1]/8
per-axis filter); `fir: "phase"` mirrors jaxsynth's per-phase slices and adds exactly. Both are
checked equal at start-up.

Same training step as jaxsynth/tasks/stylegan2.py: G phase (style mixing p 0.9, non-saturating
softplus(-D(aug(G(z)))), on PL steps the path-length penalty on batch/2 with
create_graph=True double backward, × pl_weight × pl_interval, added to the gradients; one Adam
step), EMA of G with the same β ramp; D phase (fake from the UPDATED G without grad, logistic
loss on augmented fake and real, on R1 steps γ/2·‖∇_x D(aug(real))‖² × r1_interval from a
separate forward with its own augmentation draw, one Adam step); ADA's p controller. Adam's lr
and betas are scaled by interval/(interval + 1) as in jaxsynth. The regularisers fire at
`step % interval == 0` exactly as in the jitted step; the bench times each kind of step (plain,
PL, R1, both) and weights them by their frequency in the lazy cycle, on both sides.

ADA: the same "bgc" pipeline as jaxsynth/models/ada.py, op for op: the same random draws (torch
RNG instead of jax's, so different values), one inverse affine 3×3 per image composed from the
same factors, one bilinear resampling by GATHERS with mirror reflection (as jaxsynth; not
F.grid_sample, whose backward is not twice differentiable — R1 differentiates through it), one
4×4 colour matrix. Applied to every image D sees (G main, D fake, D real, R1) when p > 0.

Deviations (cost-neutral): the G phase toggles requires_grad on D (and the D phase on G) so that
no unused parameter gradient is computed — the PyTorch idiom for "grad w.r.t. G only"; metrics
(grad norms) are not computed. `torch.compile` mode compiles G and D for the first-order passes
only: AOTAutograd does not support double backward, so the R1 and PL passes run the eager
modules (same weights).

Reads a JSON spec from argv[1] and prints one JSON line: parameter counts and, per mode, the
per-kind step times and the cycle-weighted steps/s. With `"check": "in.npz"` it instead loads
jaxsynth parameters and inputs from the npz and writes the twin's outputs to `"check_out"`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2


def channels(res: int, base: int, cmax: int) -> int:
    return min(base // res, cmax)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)


# ----------------------------------------------------------------------------- FIR resampling
_TAPS = (0.25, 0.75, 0.75, 0.25)  # [1,3,3,1]/8 · up-gain 2, per axis
FIR_MODE = "conv"


def _fir_filter(c: int, gain: float, ref: torch.Tensor) -> torch.Tensor:
    k = torch.tensor(_TAPS, dtype=ref.dtype) * gain
    return torch.outer(k, k).expand(c, 1, 4, 4).contiguous()


_FILTERS: dict = {}


def _filt(c: int, gain: float, ref: torch.Tensor) -> torch.Tensor:
    key = (c, gain, ref.dtype)
    if key not in _FILTERS:
        _FILTERS[key] = _fir_filter(c, gain, ref)
    return _FILTERS[key]


def _shift(x: torch.Tensor, dim: int, by: int) -> torch.Tensor:
    """out[i] = x[i - by] along dim, zero fill (by = ±1)."""
    n = x.shape[dim]
    pad = [0, 0] * (x.ndim - dim)  # F.pad lists the last dim first
    i = 2 * (x.ndim - 1 - dim)
    if by > 0:
        pad[i] = 1
        return F.pad(x.narrow(dim, 0, n - 1), pad)
    pad[i + 1] = 1
    return F.pad(x.narrow(dim, 1, n - 1), pad)


def _up_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    even = 0.25 * _shift(x, dim, 1) + 0.75 * x
    odd = 0.75 * x + 0.25 * _shift(x, dim, -1)
    shape = list(x.shape)
    shape[dim] *= 2
    return torch.stack([even, odd], dim + 1).reshape(shape)


def _down_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    shape = list(x.shape)
    shape[dim : dim + 1] = [shape[dim] // 2, 2]
    pairs = x.reshape(shape)
    a, b = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    return (_shift(b, dim, 1) + 3.0 * a + 3.0 * b + _shift(a, dim, -1)) * 0.125


def upsample_2x(x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """upfirdn2d(x, [1,3,3,1], up=2), NCHW."""
    if (mode or FIR_MODE) == "phase":
        return _up_axis(_up_axis(x, 2), 3)
    c = x.shape[1]
    return F.conv_transpose2d(x, _filt(c, 1.0, x), stride=2, padding=1, groups=c)


def downsample_2x(x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """upfirdn2d(x, [1,3,3,1], down=2), NCHW."""
    if (mode or FIR_MODE) == "phase":
        return _down_axis(_down_axis(x, 2), 3)
    c = x.shape[1]
    return F.conv2d(x, _filt(c, 0.5, x), stride=2, padding=1, groups=c)


# ----------------------------------------------------------------------------- layers
class EqualDense(nn.Module):
    def __init__(self, fan_in, features, lr_mul=1.0, bias_init=0.0, activation=False):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(fan_in, features) / lr_mul)
        self.bias = nn.Parameter(torch.full((features,), float(bias_init)))
        self.scale, self.lr_mul, self.activation = lr_mul / math.sqrt(fan_in), lr_mul, activation

    def forward(self, x):
        y = torch.addmm(self.bias * self.lr_mul, x, self.kernel * self.scale)
        return lrelu(y) if self.activation else y


class EqualConv(nn.Module):
    def __init__(self, cin, cout, kernel=3, use_bias=True, activation=True):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if use_bias else None
        self.scale, self.pad, self.activation = (
            1 / math.sqrt(cin * kernel**2),
            kernel // 2,
            activation,
        )

    def forward(self, x):
        y = F.conv2d(x, self.kernel * self.scale, self.bias, padding=self.pad)
        return lrelu(y) if self.activation else y


def modulated_conv(x, weight, styles, demodulate=True):
    """(x·s) ⊛ W · d with one shared conv; weight (Cout, Cin, k, k), styles (B, Cin)."""
    y = F.conv2d(x * styles[:, :, None, None], weight, padding=weight.shape[-1] // 2)
    if demodulate:
        d = torch.rsqrt(styles.square() @ weight.square().sum((2, 3)).t() + 1e-8)
        y = y * d[:, :, None, None]
    return y


class ModulatedConv(nn.Module):
    def __init__(self, cin, cout, w_dim, kernel=3, demodulate=True, up=False):
        super().__init__()
        self.affine = EqualDense(w_dim, cin, bias_init=1.0)
        self.kernel = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.scale, self.demodulate, self.up = 1 / math.sqrt(cin * kernel**2), demodulate, up

    def forward(self, x, w):
        styles = self.affine(w)
        if self.up:
            x = upsample_2x(x)
        return modulated_conv(x, self.kernel * self.scale, styles, self.demodulate)


class SynthesisLayer(nn.Module):
    def __init__(self, cin, cout, w_dim, up=False):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, w_dim, 3, True, up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x, w):
        x = self.conv(x, w)
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], dtype=x.dtype)
        return lrelu(x + noise * self.noise_strength + self.bias[None, :, None, None])


class MappingNetwork(nn.Module):
    def __init__(self, z_dim, w_dim, num_classes=0, num_layers=8, lr_mul=0.01):
        super().__init__()
        self.num_classes = num_classes
        if num_classes > 0:
            self.embed = EqualDense(num_classes, w_dim)
        fan = z_dim + (w_dim if num_classes > 0 else 0)
        for i in range(num_layers):
            self.add_module(
                f"fc{i}", EqualDense(fan if i == 0 else w_dim, w_dim, lr_mul, 0.0, True)
            )
        self.num_layers = num_layers

    def forward(self, z, labels):
        parts = [] if z is None else [normalize_2nd_moment(z)]
        if self.num_classes > 0:
            onehot = F.one_hot(labels, self.num_classes).to(self.embed.kernel.dtype)
            parts.append(normalize_2nd_moment(self.embed(onehot)))
        x = torch.cat(parts, -1) if len(parts) > 1 else parts[0]
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x


def _log2(size: int) -> int:
    lg = int(math.log2(size))
    assert 2**lg == size and 32 <= size <= 256, size
    return lg


class Synthesis(nn.Module):
    def __init__(self, image_size, w_dim, channel_base, channel_max):
        super().__init__()
        self.lg = _log2(image_size)
        ch = lambda r: channels(r, channel_base, channel_max)  # noqa: E731
        self.const = nn.Parameter(torch.randn(ch(4), 4, 4))
        self.b4_conv1 = SynthesisLayer(ch(4), ch(4), w_dim)
        self.b4_torgb = ModulatedConv(ch(4), 3, w_dim, 1, demodulate=False)
        self.b4_torgb_bias = nn.Parameter(torch.zeros(3))
        for lr in range(3, self.lg + 1):
            r = 2**lr
            self.add_module(f"b{r}_conv0", SynthesisLayer(ch(r // 2), ch(r), w_dim, up=True))
            self.add_module(f"b{r}_conv1", SynthesisLayer(ch(r), ch(r), w_dim))
            self.add_module(f"b{r}_torgb", ModulatedConv(ch(r), 3, w_dim, 1, demodulate=False))
            self.register_parameter(f"b{r}_torgb_bias", nn.Parameter(torch.zeros(3)))

    def forward(self, ws):
        x = self.const.expand(ws.shape[0], *self.const.shape)
        x = self.b4_conv1(x, ws[:, 0])
        img = self.b4_torgb(x, ws[:, 1]) + self.b4_torgb_bias[None, :, None, None]
        idx = 1
        for lr in range(3, self.lg + 1):
            r = 2**lr
            x = getattr(self, f"b{r}_conv0")(x, ws[:, idx])
            x = getattr(self, f"b{r}_conv1")(x, ws[:, idx + 1])
            y = getattr(self, f"b{r}_torgb")(x, ws[:, idx + 2])
            img = upsample_2x(img) + y + getattr(self, f"b{r}_torgb_bias")[None, :, None, None]
            idx += 2
        return img


class Generator(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        self.num_ws = 2 * _log2(s["image_size"]) - 2
        self.mapping = MappingNetwork(
            s["z_dim"], s["w_dim"], s["num_classes"], s["mapping_layers"], s["mapping_lr_mul"]
        )
        self.synthesis = Synthesis(
            s["image_size"], s["w_dim"], s["g_channel_base"], s["g_channel_max"]
        )


def minibatch_stddev(x, group, num_channels=1):
    b, c, h, w = x.shape
    g, f = min(group, b), num_channels
    y = x.reshape(g, b // g, f, c // f, h, w)
    y = y - y.mean(0)
    y = torch.sqrt(y.square().mean(0) + 1e-8)  # (b/g, f, c/f, h, w)
    y = y.mean((2, 3, 4))  # (b/g, f)
    y = y.repeat(g, 1)[:, :, None, None].expand(b, f, h, w)
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        size, self.num_classes = s["image_size"], s["num_classes"]
        self.lg = _log2(size)
        ch = lambda r: channels(r, s["d_channel_base"], s["d_channel_max"])  # noqa: E731
        self.mbstd_group, self.mbstd_channels = s["mbstd_group"], s["mbstd_channels"]
        self.fromrgb = EqualConv(3, ch(size), 1)
        for lr in range(self.lg, 2, -1):
            r = 2**lr
            self.add_module(f"b{r}_skip", EqualConv(ch(r), ch(r // 2), 1, False, False))
            self.add_module(f"b{r}_conv0", EqualConv(ch(r), ch(r), 3))
            self.add_module(f"b{r}_conv1", EqualConv(ch(r), ch(r // 2), 3))
        self.b4_conv = EqualConv(ch(4) + self.mbstd_channels, ch(4), 3)
        self.b4_fc = EqualDense(ch(4) * 16, ch(4), activation=True)
        if self.num_classes <= 0:
            self.b4_out = EqualDense(ch(4), 1)
        else:
            self.cmap_dim = s["cmap_dim"]
            self.b4_out = EqualDense(ch(4), self.cmap_dim)
            self.cmap = MappingNetwork(0, self.cmap_dim, self.num_classes, s["mapping_layers"])

    def forward(self, img, labels=None):
        x = self.fromrgb(img)
        for lr in range(self.lg, 2, -1):
            r = 2**lr
            skip = getattr(self, f"b{r}_skip")(downsample_2x(x))
            x = getattr(self, f"b{r}_conv0")(x)
            x = getattr(self, f"b{r}_conv1")(downsample_2x(x))
            x = (skip + x) * math.sqrt(0.5)
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        x = self.b4_conv(x)
        x = self.b4_fc(x.flatten(1))
        if self.num_classes <= 0:
            return self.b4_out(x)[:, 0]
        cmap = self.cmap(None, labels)
        return (self.b4_out(x) * cmap).sum(-1) / math.sqrt(self.cmap_dim)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_jax(module: nn.Module, flat: dict) -> None:
    """Copy a jaxsynth parameter dict ('a/b/kernel' -> array) into the twin, converting layouts
    (HWIO -> OIHW convs, HWC -> CHW const, D's b4_fc rows from (h, w, c) to (c, h, w) order)."""
    own = dict(module.named_parameters())
    assert sorted(own) == sorted(k.replace("/", ".") for k in flat), sorted(
        set(own) ^ {k.replace("/", ".") for k in flat}
    )
    with torch.no_grad():
        for k, v in flat.items():
            v = np.asarray(v)
            if v.ndim == 4:
                v = v.transpose(3, 2, 0, 1)
            elif k.endswith("const"):
                v = v.transpose(2, 0, 1)
            elif k == "b4_fc/kernel":
                c = v.shape[0] // 16
                v = v.reshape(4, 4, c, -1).transpose(2, 0, 1, 3).reshape(16 * c, -1)
            dst = own[k.replace("/", ".")]
            dst.copy_(torch.from_numpy(np.array(v, dtype=np.float32)).reshape(dst.shape))


# ----------------------------------------------------------------------------- ADA
def _eye(b, n):
    return torch.eye(n).expand(b, n, n)


def _scale2d(sx, sy):
    z, o = torch.zeros_like(sx), torch.ones_like(sx)
    return torch.stack(
        [torch.stack([sx, z, z], -1), torch.stack([z, sy, z], -1), torch.stack([z, z, o], -1)], 1
    )


def _rotate2d(t):
    c, s, z, o = torch.cos(t), torch.sin(t), torch.zeros_like(t), torch.ones_like(t)
    return torch.stack(
        [torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], 1
    )


def _translate2d(tx, ty):
    z, o = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack(
        [torch.stack([o, z, tx], -1), torch.stack([z, o, ty], -1), torch.stack([z, z, o], -1)], 1
    )


def _gate(p, value, neutral):
    on = torch.rand(value.shape[0]) < p
    return torch.where(on.reshape(on.shape + (1,) * (value.ndim - 1)), value, neutral)


def geometric_matrix(b, size, p, blit, geom):
    g = _eye(b, 3)
    if blit:
        i = torch.floor(torch.rand(b) * 2)
        g = g @ _scale2d(1 - 2 * _gate(p, i, 0.0), torch.ones(b))
        i = torch.floor(torch.rand(b) * 4)
        g = g @ _rotate2d(-0.5 * math.pi * _gate(p, i, 0.0))
        t = (torch.rand(b, 2) * 2 - 1) * 0.125
        t = torch.round(_gate(p, t, 0.0) * size)
        g = g @ _translate2d(-t[:, 0], -t[:, 1])
    if geom:
        s = _gate(p, torch.exp2(torch.randn(b) * 0.2), 1.0)
        g = g @ _scale2d(1 / s, 1 / s)
        p_rot = 1 - math.sqrt(1 - min(p, 1.0))
        t = (torch.rand(b) * 2 - 1) * math.pi
        g = g @ _rotate2d(-_gate(p_rot, t, 0.0))
        s = _gate(p, torch.exp2(torch.randn(b) * 0.2), 1.0)
        g = g @ _scale2d(1 / s, s)
        t = (torch.rand(b) * 2 - 1) * math.pi
        g = g @ _rotate2d(-_gate(p_rot, t, 0.0))
        t = _gate(p, torch.randn(b, 2) * 0.125, 0.0) * size
        g = g @ _translate2d(-t[:, 0], -t[:, 1])
    return g


def _reflect(u, n):
    period = 2.0 * (n - 1)
    u = torch.remainder(u, period)
    return torch.where(u > n - 1, period - u, u)


def warp(x, g_inv):
    """Bilinear resampling of x (B,C,H,W) at g_inv @ (centred output pixel), reflect padded,
    by gathers (as jaxsynth)."""
    b, c, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=x.dtype) - (h - 1) / 2,
        torch.arange(w, dtype=x.dtype) - (w - 1) / 2,
        indexing="ij",
    )
    coords = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w, dtype=x.dtype)], 0)
    src = g_inv.to(x.dtype) @ coords  # (B, 3, HW)
    u = _reflect(src[:, 0] + (w - 1) / 2, w)
    v = _reflect(src[:, 1] + (h - 1) / 2, h)
    u0 = torch.clamp(torch.floor(u), 0, w - 1)
    v0 = torch.clamp(torch.floor(v), 0, h - 1)
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    u0i, v0i = u0.long(), v0.long()
    u1i, v1i = torch.clamp(u0i + 1, max=w - 1), torch.clamp(v0i + 1, max=h - 1)
    flat = x.reshape(b, c, h * w)

    def tap(vi, ui):
        return torch.take_along_dim(flat, (vi * w + ui)[:, None], dim=2)

    top = tap(v0i, u0i) * (1 - fu) + tap(v0i, u1i) * fu
    bottom = tap(v1i, u0i) * (1 - fu) + tap(v1i, u1i) * fu
    return (top * (1 - fv) + bottom * fv).reshape(b, c, h, w)


def _rotate_about(axis, t):
    x, y, z = (float(a) for a in axis)
    c, s = torch.cos(t)[:, None, None], torch.sin(t)[:, None, None]
    kmat = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    r = torch.eye(3) + s * kmat + (1 - c) * (kmat @ kmat)
    out = torch.eye(4).repeat(t.shape[0], 1, 1)
    out[:, :3, :3] = r
    return out


def color_matrix(b, p):
    eye = _eye(b, 4)
    v = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)
    vv = torch.outer(v, v)
    m = eye
    br = _gate(p, torch.randn(b) * 0.2, 0.0)
    t = eye.clone()
    t[:, :3, 3] = br[:, None]
    m = t @ m
    ct = _gate(p, torch.exp2(torch.randn(b) * 0.5), 1.0)
    m = (eye * torch.cat([ct[:, None].expand(b, 3), torch.ones(b, 1)], 1)[:, None]) @ m
    i = _gate(p, torch.floor(torch.rand(b) * 2), 0.0)
    m = (eye - 2 * vv * i[:, None, None]) @ m
    t = _gate(p, (torch.rand(b) * 2 - 1) * math.pi, 0.0)
    m = _rotate_about(v[:3], t) @ m
    s = _gate(p, torch.exp2(torch.randn(b) * 1.0), 1.0)
    m = (vv + (eye - vv) * s[:, None, None]) @ m
    return m


def augment(x, p: float, groups: str):
    b, _, h, w = x.shape
    if "b" in groups or "g" in groups:
        x = warp(x, geometric_matrix(b, w, p, "b" in groups, "g" in groups))
    if "c" in groups:
        m = color_matrix(b, p).to(x.dtype)
        x = torch.einsum("bij,bjhw->bihw", m[:, :3, :3], x) + m[:, :3, 3, None, None]
    return x


# ----------------------------------------------------------------------------- the step
class Twin:
    """Networks, optimisers and the jaxsynth StyleGAN2-ADA step (`step(i)`)."""

    def __init__(self, s: dict):
        torch.manual_seed(0)
        self.s = s
        self.G, self.D = Generator(s), Discriminator(s)
        self.G_ema = Generator(s).requires_grad_(False)
        self.G_ema.load_state_dict(self.G.state_dict())
        self.gs, self.ds = self.G, self.D  # the modules the first-order passes call
        b, size = s["batch"], s["image_size"]

        def adam(params, lr, interval):
            c = interval / (interval + 1) if interval > 0 else 1.0
            return torch.optim.Adam(
                params, lr * c, betas=(s["b1"] ** c, s["b2"] ** c), eps=s["eps"]
            )

        self.opt_g = adam(
            self.G.parameters(), s["g_lr"], s["pl_interval"] if s["pl_weight"] > 0 else 0
        )
        self.opt_d = adam(
            self.D.parameters(), s["d_lr"], s["r1_interval"] if s["r1_gamma"] > 0 else 0
        )
        self.real = torch.rand(b, 3, size, size) * 2 - 1
        k = s["num_classes"]
        self.real_labels = torch.randint(0, k, (b,)) if k > 0 else None
        self.p = float(s["ada_p"])
        self.pl_mean = 0.0
        self.sign_sum, self.sign_count = 0.0, 0

    def _labels(self, n):
        k = self.s["num_classes"]
        return torch.randint(0, k, (n,)) if k > 0 else None

    def _ws(self, G, n, labels):
        s, nw = self.s, self.G.num_ws
        w1 = G.mapping(torch.randn(n, s["z_dim"]), labels)
        ws = w1[:, None].expand(n, nw, w1.shape[-1])
        if s["style_mixing"] > 0:
            w2 = G.mapping(torch.randn(n, s["z_dim"]), labels)
            cutoff = int(torch.randint(1, nw, ()))
            if float(torch.rand(())) >= s["style_mixing"]:
                cutoff = nw
            keep = (torch.arange(nw) < cutoff)[None, :, None]
            ws = torch.where(keep, ws, w2[:, None])
        return ws

    def _d(self, D, x, labels):
        if self.s["ada_groups"] and self.p > 0:
            x = augment(x, self.p, self.s["ada_groups"])
        return D(x, labels)

    def step(self, i: int) -> float:
        s, b = self.s, self.s["batch"]
        G, D, Gc, Dc = self.G, self.D, self.gs, self.ds
        # ---- G: non-saturating loss (+ lazy path length)
        G.requires_grad_(True)
        D.requires_grad_(False)
        labels = self._labels(b)
        img = Gc.synthesis(self._ws(Gc, b, labels))
        g_loss = F.softplus(-self._d(Dc, img, labels)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        if s["pl_weight"] > 0 and s["pl_interval"] > 0 and i % s["pl_interval"] == 0:
            pl_b = b // s["pl_batch_shrink"]
            ws = self._ws(G, pl_b, self._labels(pl_b))
            out = G.synthesis(ws)
            size = s["image_size"]
            noise = torch.randn(pl_b, 3, size, size) / size
            (grads,) = torch.autograd.grad((out * noise).sum(), ws, create_graph=True)
            lengths = grads.square().sum(2).mean(1).sqrt()
            self.pl_mean = (
                self.pl_mean + (float(lengths.detach().mean()) - self.pl_mean) * s["pl_decay"]
            )
            pen = (lengths - self.pl_mean).square().mean()
            (pen * s["pl_weight"] * s["pl_interval"]).backward()
        self.opt_g.step()
        # EMA with the same β ramp
        nimg = s["ema_kimg"] * 1000.0
        if s["ema_rampup"] > 0:
            nimg = min(nimg, i * b * s["ema_rampup"])
        beta = 0.5 ** (b / max(nimg, 1e-8))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.G_ema.parameters()), list(G.parameters()), 1.0 - beta)
        # ---- D: logistic loss on augmented fake and real (+ lazy R1)
        G.requires_grad_(False)
        D.requires_grad_(True)
        fl = self._labels(b)
        with torch.no_grad():
            fake = Gc.synthesis(self._ws(Gc, b, fl))
        lf = self._d(Dc, fake, fl)
        lr_ = self._d(Dc, self.real, self.real_labels)
        d_loss = F.softplus(lf).mean() + F.softplus(-lr_).mean()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        if s["r1_gamma"] > 0 and s["r1_interval"] > 0 and i % s["r1_interval"] == 0:
            x = self.real.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(self._d(D, x, self.real_labels).sum(), x, create_graph=True)
            pen = gx.square().sum((1, 2, 3)).mean()
            (pen * (s["r1_gamma"] / 2) * s["r1_interval"]).backward()
        self.opt_d.step()
        # ---- ADA controller
        if s["ada_groups"] and s["ada_target"] > 0:
            self.sign_sum += float(torch.sign(lr_.detach()).sum())
            self.sign_count += b
            if (i + 1) % s["ada_interval"] == 0:
                rt = self.sign_sum / max(self.sign_count, 1)
                step = math.copysign(1.0, rt - s["ada_target"]) if rt != s["ada_target"] else 0.0
                self.p = min(max(self.p + step * self.sign_count / (s["ada_kimg"] * 1000), 0), 1)
                self.sign_sum, self.sign_count = 0.0, 0
        return float(g_loss.detach()) + float(d_loss.detach())


def fir_self_check() -> float:
    """Max |conv form - phase form| of the FIR up/down resampling on a random tensor."""
    x = torch.randn(2, 3, 8, 8)
    up = (upsample_2x(x, "conv") - upsample_2x(x, "phase")).abs().max()
    down = (downsample_2x(x, "conv") - downsample_2x(x, "phase")).abs().max()
    return float(max(up, down))


def run(spec: dict) -> dict:
    global FIR_MODE
    FIR_MODE = spec.get("fir", "conv")
    if "threads" in spec:
        torch.set_num_threads(int(spec["threads"]))
    fir_err = fir_self_check()
    assert fir_err < 1e-5, f"FIR conv and phase forms differ by {fir_err}"
    twin = Twin(spec)
    out = {
        "g_params": count(twin.G),
        "d_params": count(twin.D),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "fir": FIR_MODE,
        "fir_forms_max_diff": fir_err,
    }
    if spec.get("count_only"):
        return out
    kinds = spec["kinds"]  # {"plain": {"step": i, "weight": w}, ...}
    for mode in spec["modes"]:
        if mode == "compile":
            twin.gs = SimpleNamespace(
                mapping=torch.compile(twin.G.mapping), synthesis=torch.compile(twin.G.synthesis)
            )
            twin.ds = torch.compile(twin.D)
        else:
            twin.gs, twin.ds = twin.G, twin.D
        res: dict = {"kinds": {}}
        try:
            for name, k in kinds.items():
                t0 = time.perf_counter()
                twin.step(k["step"])  # warm-up (and compilation)
                warm = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in range(spec["steps"]):
                    twin.step(k["step"])
                sec = (time.perf_counter() - t0) / spec["steps"]
                res["kinds"][name] = {"s_per_step": sec, "warmup_s": warm}
        except Exception as e:  # noqa: BLE001 - report the mode's failure, keep the others
            out[mode] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            continue
        sec = sum(kinds[n]["weight"] * r["s_per_step"] for n, r in res["kinds"].items())
        res.update(steps_per_s=1 / sec, images_per_s=spec["batch"] / sec)
        out[mode] = res
    return out


def check(spec: dict) -> None:
    """Parity with jaxsynth: load its parameters and inputs, write the twin's outputs."""
    global FIR_MODE
    FIR_MODE = spec.get("fir", "conv")
    data = dict(np.load(spec["check"]))
    twin = Twin(spec)
    load_jax(twin.G, {k[2:]: v for k, v in data.items() if k.startswith("G/")})
    load_jax(twin.D, {k[2:]: v for k, v in data.items() if k.startswith("D/")})
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    with torch.no_grad():
        ws = t(data["in_ws"])
        img = twin.G.synthesis(ws)
        w = twin.G.mapping(t(data["in_z"]), None)
        logits = twin.D(t(data["in_img"]).permute(0, 3, 1, 2))
        warped = warp(t(data["in_img"]).permute(0, 3, 1, 2), t(data["in_ginv"]))
    np.savez(
        spec["check_out"],
        img=img.permute(0, 2, 3, 1).numpy(),
        w=w.numpy(),
        logits=logits.numpy(),
        warped=warped.permute(0, 2, 3, 1).numpy(),
        g_params=count(twin.G),
        d_params=count(twin.D),
    )


if __name__ == "__main__":
    SPEC = json.loads(sys.argv[1])
    if "check" in SPEC:
        check(SPEC)
    else:
        print(json.dumps(run(SPEC)))
