"""A Vision Transformer encoder in Flax linen, shaped to run published pathology encoders.

Why one module for several checkpoints: Phikon (HF `ViTModel`), Phikon-v2 / DINOv2 (HF
`Dinov2Model`), UNI / UNI2 / H-optimus-0 / H0-mini (timm `VisionTransformer`) are all the same
pre-norm transformer; they differ only in a handful of switches, collected in `VitSpec`:

* register tokens after the CLS token (UNI2, H-optimus-0, H0-mini: `num_registers`);
* which tokens the position embedding covers (`pos_prefix`: HF and timm's default add it to
  CLS too, timm's `no_embed_class=True` to the patch tokens only; `pos_registers`: timm with
  `no_embed_class=False` also to the registers, HF `Dinov2WithRegisters` never);
* layer scale (`ls1`/`ls2`: DINOv2-style `init_values`), on or off;
* the MLP: GELU (erf, as torch's `nn.GELU()`), or SwiGLU with the gate and value projections
  packed in one matrix (timm `SwiGLUPacked`, HF `Dinov2SwiGLUFFN`: `silu(x1) * x2`);
* LayerNorm epsilon (HF ViT 1e-12, DINOv2 and timm 1e-6).

Parameters use ONE canonical naming (`patch_embed`, `cls_token`, `reg_token`, `pos_embed`,
`block_<i>/{norm1,qkv,proj,ls1,norm2,fc1,fc2,ls2}`, `norm`); `jaxsynth.eval.vit_weights` maps
each published layout onto it (HF's separate q/k/v are concatenated into `qkv`). The position
embedding arrives already resampled to the input grid (done once in numpy at load time, exactly
as torch does it), so the forward pass has no resize in it.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

POOLS = ("cls", "mean", "cls+mean")


@dataclasses.dataclass(frozen=True)
class VitSpec:
    """Architecture switches (hashable: a field of the Flax module)."""

    dim: int
    depth: int
    heads: int
    patch: int
    mlp_hidden: int  # width of fc1's output (2x the gated width for packed SwiGLU)
    mlp: str = "gelu"  # "gelu" | "swiglu"
    num_registers: int = 0
    pos_prefix: bool = True  # position embedding also covers the CLS token
    pos_registers: bool = False  # ... and the register tokens
    layer_scale: bool = False
    eps: float = 1e-6


class _Block(nn.Module):
    spec: VitSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.spec
        b, n, d = x.shape
        h = nn.LayerNorm(epsilon=s.eps, name="norm1")(x)
        qkv = nn.Dense(3 * d, name="qkv")(h).reshape(b, n, 3, s.heads, d // s.heads)
        # head-major (3, B, H, N, hd): both attention products are then plain batched matmuls;
        # XLA:CPU ran the token-major `bhqk,bkhd->bqhd` product ~3x slower (docs/feature_spaces.md)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (d // s.heads) ** -0.5
        att = jax.nn.softmax(logits, axis=-1)
        h = jnp.einsum("bhqk,bhkd->bhqd", att, v).transpose(0, 2, 1, 3).reshape(b, n, d)
        h = nn.Dense(d, name="proj")(h)
        if s.layer_scale:
            h = h * self.param("ls1", nn.initializers.ones, (d,))
        x = x + h
        h = nn.LayerNorm(epsilon=s.eps, name="norm2")(x)
        h = nn.Dense(s.mlp_hidden, name="fc1")(h)
        if s.mlp == "swiglu":
            gate, value = jnp.split(h, 2, axis=-1)
            h = jax.nn.silu(gate) * value
        else:
            h = jax.nn.gelu(h, approximate=False)
        h = nn.Dense(d, name="fc2")(h)
        if s.layer_scale:
            h = h * self.param("ls2", nn.initializers.ones, (d,))
        return x + h


class VisionTransformer(nn.Module):
    """Tokens after the final LayerNorm: (B, 1 + num_registers + patches, dim).

    Input: float32 (B, H, W, 3), already normalised the checkpoint's way; H and W must be
    multiples of the patch size and match the grid of the `pos_embed` parameter.
    """

    spec: VitSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.spec
        p = s.patch
        x = nn.Conv(s.dim, (p, p), strides=(p, p), padding="VALID", name="patch_embed")(x)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)
        r = s.num_registers
        n_cls, n_reg = int(s.pos_prefix), (r if s.pos_registers else 0)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, n_cls + n_reg + gh * gw, d))
        cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, d))
        if n_cls:
            cls = cls + pos[:, :1]
        tokens = [jnp.broadcast_to(cls, (b, 1, d))]
        if r:
            reg = self.param("reg_token", nn.initializers.normal(0.02), (1, r, d))
            if n_reg:
                reg = reg + pos[:, n_cls : n_cls + n_reg]
            tokens.append(jnp.broadcast_to(reg, (b, r, d)))
        x = jnp.concatenate([*tokens, x + pos[:, n_cls + n_reg :]], axis=1)
        for i in range(s.depth):
            x = _Block(s, name=f"block_{i}")(x)
        return nn.LayerNorm(epsilon=s.eps, name="norm")(x)


def pool_tokens(tokens: jax.Array, pool: str, num_registers: int) -> jax.Array:
    """The image feature from the final tokens: CLS, the mean of the patch tokens (registers
    excluded), or both concatenated (H0-mini's card recommends the latter)."""
    cls = tokens[:, 0]
    patches = tokens[:, 1 + num_registers :].mean(axis=1)
    if pool == "cls":
        return cls
    if pool == "mean":
        return patches
    if pool == "cls+mean":
        return jnp.concatenate([cls, patches], axis=-1)
    raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
