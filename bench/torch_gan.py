"""PyTorch twins of jaxsynth's GANs, for bench/train_bench.py (run by the Python given as
`--torch-python` / `$JAXSYNTH_TORCH_PYTHON`).

Same architectures as jaxsynth/models/gan.py (widths, kernels, norms, dropout, projection
discriminator) and the same step as jaxsynth/tasks/gan.py (D update on detached fakes, then a G
update on fresh noise; WGAN-GP: n_critic critic updates with the gradient penalty, then G).
Reads a JSON spec from argv[1], prints one JSON line with the timings. Imports only torch/numpy.
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def stage_width(res, size, base, maxw):
    return int(min(maxw, base * size // (2 * res)))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at each pixel (flax nn.LayerNorm on NHWC)."""

    def __init__(self, c):
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Generator(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s
        size, base, maxw = s["image_size"], s["g_base_width"], s["g_max_width"]
        stages = int(math.log2(size // 4))
        self.w0 = stage_width(4, size, base, maxw)
        self.ncls = s["num_classes"]
        self.project = nn.Linear(s["latent_dim"] + self.ncls, 16 * self.w0)
        act = nn.ReLU() if s["g_activation"] == "relu" else nn.LeakyReLU(0.2)
        bn = s["g_norm"] == "batch"
        layers = [nn.BatchNorm2d(self.w0, momentum=0.1) if bn else nn.Identity(), act]
        cin, res = self.w0, 4
        for i in range(stages):
            res *= 2
            last = i == stages - 1
            cout = 3 if last else stage_width(res, size, base, maxw)
            layers.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=last or not bn))
            if not last:
                layers += [nn.BatchNorm2d(cout, momentum=0.1) if bn else nn.Identity(), act]
            cin = cout
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z, labels=None):
        if self.ncls:
            z = torch.cat([z, F.one_hot(labels, self.ncls).float()], 1)
        return self.net(self.project(z).view(z.shape[0], self.w0, 4, 4))


class Discriminator(nn.Module):
    def __init__(self, s):
        super().__init__()
        size, base, maxw = s["image_size"], s["d_base_width"], s["d_max_width"]
        stages = int(math.log2(size // 4))
        layers, cin, res = [], 3, size
        for i in range(stages):
            res //= 2
            cout = stage_width(res, size, base, maxw)
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1))
            if s["d_norm"] == "layer" and i > 0:
                layers.append(ChannelLayerNorm(cout))
            layers.append(nn.LeakyReLU(0.2))
            if s["d_dropout"] > 0:
                layers.append(nn.Dropout(s["d_dropout"]))
            cin = cout
        self.net = nn.Sequential(*layers)
        self.logit = nn.Linear(16 * cin, 1)
        self.ncls = s["num_classes"]
        if self.ncls:
            self.embed = nn.Embedding(self.ncls, 16 * cin)

    def forward(self, x, labels=None):
        h = self.net(x).flatten(1)
        out = self.logit(h)[:, 0]
        if self.ncls:
            out = out + (self.embed(labels) * h).sum(1)
        return out


def make_step(s, g, d, opt_g, opt_d):
    b, latent, ncls = s["batch_size"], s["latent_dim"], s["num_classes"]
    real_label = s["real_label"]

    def labels_of(n):
        return torch.randint(0, ncls, (n,)) if ncls else None

    def ns_step(real, real_labels):
        z = torch.randn(b, latent)
        fl = labels_of(b)
        fake = g(z, fl).detach()
        lr_, lf = d(real, real_labels), d(fake, fl)
        d_loss = F.binary_cross_entropy_with_logits(
            lr_, torch.full_like(lr_, real_label)
        ) + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        z = torch.randn(b, latent)
        fl = labels_of(b)
        lg = d(g(z, fl), fl)
        g_loss = F.binary_cross_entropy_with_logits(lg, torch.ones_like(lg))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return d_loss.detach(), g_loss.detach()

    def wgan_step(reals, real_labels):
        nc = s["n_critic"]
        cb = b // nc
        for i in range(nc):
            real = reals[i * cb : (i + 1) * cb]
            rl = real_labels[i * cb : (i + 1) * cb] if ncls else None
            z = torch.randn(cb, latent)
            fl = labels_of(cb)
            fake = g(z, fl).detach()
            eps = torch.rand(cb, 1, 1, 1)
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            grads = torch.autograd.grad(d(x_hat, rl).sum(), x_hat, create_graph=True)[0]
            gp = ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()
            d_loss = d(fake, fl).mean() - d(real, rl).mean() + s["gp_weight"] * gp
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        z = torch.randn(cb, latent)
        fl = labels_of(cb)
        g_loss = -d(g(z, fl), fl).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return d_loss.detach(), g_loss.detach()

    return wgan_step if s["loss"] == "wgan_gp" else ns_step


def _sync(device: str) -> None:
    """Wait for queued CUDA work, so the clock times the work and not the launch queue."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(s, mode):
    device = s.get("device", "cpu")
    torch.set_default_device(device)  # models, noise and batches all on `device`
    torch.manual_seed(0)
    g, d = Generator(s), Discriminator(s)
    if s.get("channels_last"):
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(g.parameters(), s["lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), s["lr"], betas=(0.5, 0.999))
    step = make_step(s, g, d, opt_g, opt_d)
    if mode == "compile":
        step = torch.compile(step)
    size = s["image_size"]
    real = torch.rand(s["batch_size"], 3, size, size) * 2 - 1
    labels = torch.randint(0, max(1, s["num_classes"]), (s["batch_size"],))
    t0 = time.perf_counter()
    for _ in range(s["warmup"]):
        step(real, labels)
    _sync(device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(s["steps"]):
        dl, gl = step(real, labels)
    float(dl)
    _sync(device)
    dt = time.perf_counter() - t0
    return {
        "steps_per_s": s["steps"] / dt,
        "warmup_s": warm,
        "threads": torch.get_num_threads(),
        "device": device,
    }


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    out = {"torch": torch.__version__}
    for mode in spec["modes"]:
        try:
            out[mode] = run(spec, mode)
        except Exception as e:  # torch.compile may not support a step (e.g. double backward)
            out[mode] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    print("TORCH_RESULT " + json.dumps(out), flush=True)
