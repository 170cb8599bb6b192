"""A small convolutional encoder for self-supervised (SimCLR-style) features of tissue tiles.

Why its own network: the tumour-vs-normal CNN's penultimate layer only keeps what separates
the two classes, so a generator that drops a tissue component shared by both (stroma fibres)
goes unseen in it. A contrastive encoder must tell every tile from every other tile, so it has
to keep texture such as fibre patterns. GroupNorm instead of BatchNorm: features must not
depend on which other tiles share the batch, and no running statistics need saving.

`__call__` returns the projection-head output the contrastive loss uses; `features` returns
the pooled representation before the head (the standard choice for downstream use).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class SslEncoder(nn.Module):
    widths: tuple[int, ...] = (32, 64, 128, 256)
    proj_dim: int = 128

    def setup(self):
        convs, norms = [], []
        for i, w in enumerate(self.widths):
            stride = (1, 1) if i == 0 else (2, 2)
            convs += [nn.Conv(w, (3, 3), strides=stride), nn.Conv(w, (3, 3))]
            norms += [nn.GroupNorm(num_groups=min(8, w)), nn.GroupNorm(num_groups=min(8, w))]
        self.convs, self.norms = convs, norms
        self.proj1 = nn.Dense(2 * self.widths[-1])
        self.proj2 = nn.Dense(self.proj_dim)

    def features(self, x: jax.Array) -> jax.Array:
        """float32 (B, H, W, 3) in [-1, 1] -> (B, 2 * widths[-1]): per-channel mean and std of
        the last feature map (the std keeps texture strength, which a mean alone averages out)."""
        for conv, norm in zip(self.convs, self.norms):
            x = nn.gelu(norm(conv(x)))
        return jnp.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=-1)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.features(x)
        return self.proj2(nn.gelu(self.proj1(h)))
