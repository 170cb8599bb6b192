"""The jaxsynth DDPM U-Net written again in PyTorch, layer for layer, for bench/ddpm_bench.py.

Run by the benchmark as a subprocess of a Python with torch 2.13 (`--torch-python` or
`$JAXSYNTH_TORCH_PYTHON`): `python bench/ddpm_torch.py '<json args>'`; prints one JSON line
with training img/s, DDIM sampling img/s and the parameter count (which must equal the Flax
model's: same architecture).
Mirrors jaxsynth/models/unet.py: ResBlock (GroupNorm-SiLU-Conv, time embedding, GroupNorm-SiLU-
Conv, 1x1 skip), self-attention at the listed resolutions, stride-2 conv down, nearest+conv up.
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def num_groups(channels: int, max_groups: int = 32) -> int:
    for g in range(min(max_groups, max(1, channels // 4)), 0, -1):
        if channels % g == 0:
            return g
    return 1


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(num_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, ch, heads):
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = nn.GroupNorm(num_groups(ch), ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = nn.Linear(ch, ch)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
        q, k, v = self.qkv(y).reshape(b, h * w, 3, self.heads, c // self.heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    def __init__(self, image_size, base, mults, num_res, attn_res, heads, dropout, in_ch=3):
        super().__init__()
        self.base = base
        emb = 4 * base
        self.time = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(in_ch, base, 3, padding=1)
        self.down = nn.ModuleList()
        chans, ch, side = [base], base, image_size
        for level, m in enumerate(mults):
            for _ in range(num_res):
                blk = nn.ModuleList([ResBlock(ch, base * m, emb, dropout)])
                ch = base * m
                if side in attn_res:
                    blk.append(Attention(ch, heads))
                self.down.append(blk)
                chans.append(ch)
            if level != len(mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                chans.append(ch)
                side //= 2
        self.mid1 = ResBlock(ch, ch, emb, dropout)
        self.mid_attn = Attention(ch, heads)
        self.mid2 = ResBlock(ch, ch, emb, dropout)
        self.up = nn.ModuleList()
        for level in reversed(range(len(mults))):
            for _ in range(num_res + 1):
                blk = nn.ModuleList([ResBlock(ch + chans.pop(), base * mults[level], emb, dropout)])
                ch = base * mults[level]
                if side in attn_res:
                    blk.append(Attention(ch, heads))
                self.up.append(blk)
            if level != 0:
                self.up.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, padding=1)]))
                side *= 2
        self.norm_out = nn.GroupNorm(num_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x, t):
        emb = self.time(sinusoidal(t, self.base))
        h = self.conv_in(x)
        skips = [h]
        for blk in self.down:
            if isinstance(blk[0], ResBlock):
                h = blk[0](h, emb)
                for a in blk[1:]:
                    h = a(h)
            else:
                h = blk[0](h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for blk in self.up:
            if isinstance(blk[0], ResBlock):
                h = blk[0](torch.cat([h, skips.pop()], dim=1), emb)
                for a in blk[1:]:
                    h = a(h)
            else:
                h = blk[0](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def cosine_alphas_cumprod(T: int) -> torch.Tensor:
    s = 0.008
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    betas = torch.clamp(1 - ab[1:] / ab[:-1], max=0.999)
    return torch.cumprod(1 - betas, 0).float()


def _sync(device: str) -> None:
    """Wait for queued CUDA work, so the clock times the work and not the launch queue."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(args: dict) -> dict:
    device = args.get("device", "cpu")
    torch.set_default_device(device)  # network, noise and batches all on `device`
    torch.manual_seed(0)
    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    channels_last = args.get("channels_last", False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    s, b = args["image_size"], args["batch"]
    net = UNet(s, args["base"], args["mults"], args["num_res"], args["attn"], args["heads"], 0.0)
    net = net.to(memory_format=fmt)
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    T = args["timesteps"]
    ab = cosine_alphas_cumprod(T)
    x0 = (torch.rand(b, 3, s, s) * 2 - 1).to(memory_format=fmt)

    def step():
        t = torch.randint(0, T, (b,))
        noise = torch.randn_like(x0)
        a = ab[t].sqrt()[:, None, None, None]
        xt = a * x0 + (1 - ab[t]).sqrt()[:, None, None, None] * noise
        loss = F.mse_loss(net(xt, t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if args.get("compile"):
        step = torch.compile(step)
    for _ in range(args["warmup"]):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args["steps"]):
        step()
    _sync(device)
    train_ips = args["steps"] * b / (time.perf_counter() - t0)

    # DDIM (eta=0) sampling, Python loop of eager forward passes, as reference code does
    ts = torch.linspace(0, T - 1, args["ddim_steps"]).round().long().flip(0)
    net.eval()

    @torch.no_grad()
    def ddim(n):
        x = torch.randn(n, 3, s, s).to(memory_format=fmt)
        for i, t in enumerate(ts):
            a_t = ab[t]
            a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            eps = net(x, torch.full((n,), int(t)))
            x0_hat = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            eps = (x - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
            x = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps
        return x

    n = args.get("sample_batch", b)
    with torch.no_grad():  # warm-up: one forward at the sampling batch size
        net(torch.randn(n, 3, s, s).to(memory_format=fmt), torch.zeros(n, dtype=torch.long))
    _sync(device)
    t0 = time.perf_counter()
    ddim(n)
    _sync(device)
    ddim_ips = n / (time.perf_counter() - t0)
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "channels_last": channels_last,
        "device": device,
        "compiled": bool(args.get("compile")),
        "params": n_params,
        "train_img_per_s": train_ips,
        "ddim_img_per_s": ddim_ips,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
