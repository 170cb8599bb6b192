"""PyTorch twin of jaxsynth's pix2pix step, for bench/i2i_bench.py (runs under any torch venv).

Same networks as jaxsynth/models/i2i.py (U-Net: 4×4 stride-2 convs, LeakyReLU 0.2, instance
norm on the inner levels, 4×4 stride-2 transposed convs with ReLU, instance norm, dropout next
to the bottleneck and skip concatenation, tanh; PatchGAN: `num_down` 4×4 stride-2 convs, a 4×4
stride-1 conv, a 4×4 stride-1 logit conv) and the same step as jaxsynth/tasks/pix2pix.py (one D
update on the detached fake, then one G update: BCE + 100·L1, Adam 2e-4 β 0.5). Reads a JSON
spec from argv[1], prints one JSON line with the timings. Imports only torch.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=True, eps=1e-5)


class UNet(nn.Module):
    def __init__(self, c_in, base, maxw, num_downs, num_dropout):
        super().__init__()
        self.widths = [min(maxw, base * 2**i) for i in range(num_downs)]
        n = num_downs
        self.downs = nn.ModuleList()
        self.dnorms = nn.ModuleList()
        c = c_in
        for i, w in enumerate(self.widths):
            self.downs.append(nn.Conv2d(c, w, 4, 2, 1))
            self.dnorms.append(_norm(w) if 0 < i < n - 1 else nn.Identity())
            c = w
        self.ups = nn.ModuleList()
        self.unorms = nn.ModuleList()
        self.drops = nn.ModuleList()
        for i in reversed(range(1, n)):
            c_up = self.widths[i] if i == n - 1 else 2 * self.widths[i]
            self.ups.append(nn.ConvTranspose2d(c_up, self.widths[i - 1], 4, 2, 1, bias=False))
            self.unorms.append(_norm(self.widths[i - 1]))
            depth = n - 1 - i
            self.drops.append(nn.Dropout(0.5) if 0 < depth <= num_dropout else nn.Identity())
        self.out = nn.ConvTranspose2d(2 * self.widths[0], 3, 4, 2, 1)

    def forward(self, x):
        skips, h = [], x
        for i, (conv, norm) in enumerate(zip(self.downs, self.dnorms, strict=True)):
            h = norm(conv(F.leaky_relu(h, 0.2) if i > 0 else h))
            skips.append(h)
        for j, (up, norm, drop) in enumerate(zip(self.ups, self.unorms, self.drops, strict=True)):
            i = len(self.widths) - 1 - j
            h = drop(norm(up(F.relu(h))))
            h = torch.cat([skips[i - 1], h], 1)
        return torch.tanh(self.out(F.relu(h)))


class Patch(nn.Module):
    def __init__(self, c_in, base, maxw, num_down):
        super().__init__()
        layers, c = [], c_in
        for i in range(num_down):
            w = min(maxw, base * 2**i)
            layers += [nn.Conv2d(c, w, 4, 2, 1)] + ([_norm(w)] if i > 0 else [])
            layers += [nn.LeakyReLU(0.2)]
            c = w
        w = min(maxw, base * 2**num_down)
        layers += [nn.Conv2d(c, w, 4, 1, 1)] + ([_norm(w)] if num_down > 0 else [])
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(w, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def run(spec: dict) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(int(spec.get("threads", torch.get_num_threads())))
    b, s, k = spec["batch"], spec["image_size"], spec["num_classes"]
    c_in = 1 + k
    g = UNet(
        c_in, spec["g_base_width"], spec["g_max_width"], spec["num_downs"], spec["num_dropout"]
    )
    d = Patch(c_in + 3, spec["d_base_width"], spec["d_max_width"], spec["d_num_down"])
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    cond = torch.randn(b, c_in, s, s)
    real = torch.rand(b, 3, s, s) * 2 - 1

    def step():
        fake = g(cond)
        l_real = d(torch.cat([cond, real], 1))
        l_fake = d(torch.cat([cond, fake.detach()], 1))
        loss_d = 0.5 * (
            F.binary_cross_entropy_with_logits(l_real, torch.ones_like(l_real))
            + F.binary_cross_entropy_with_logits(l_fake, torch.zeros_like(l_fake))
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        l_g = d(torch.cat([cond, fake], 1))
        loss_g = F.binary_cross_entropy_with_logits(l_g, torch.ones_like(l_g))
        loss_g = loss_g + 100.0 * (fake - real).abs().mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return float(loss_g)

    out = {}
    for mode in spec["modes"]:
        fn = torch.compile(step) if mode == "compile" else step
        t0 = time.perf_counter()
        fn()  # warm-up (and compilation)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(spec["steps"]):
            fn()
        sec = (time.perf_counter() - t0) / spec["steps"]
        out[mode] = {"steps_per_s": 1.0 / sec, "images_per_s": b / sec, "warmup_s": warm}
    out["torch"] = torch.__version__
    out["threads"] = torch.get_num_threads()
    return out


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
