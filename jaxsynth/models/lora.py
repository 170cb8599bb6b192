"""LoRA (Hu et al. 2021): rank-r adapters on the attention projections of any Flax model.

Why this shape: the Stable Diffusion U-Net is diffusers' module, which has no adapter hook, and
the project must not depend on diffusers' (removed) Flax training code. So the adapter is
attached from the outside:

* `LoraAdapter` is the Flax module: `x -> (x @ down) @ up * scale`, `down` ~ N(0, 1/r^2)
  (diffusers' and the paper's choice), `up` = 0, so a fresh adapter changes nothing;
* `apply_with_lora` runs the model with every targeted `nn.Dense` intercepted
  (`nn.intercept_methods`): its output gets the adapter's output added. The base kernels are
  untouched (frozen, no merged copy), gradients flow to `down` / `up` only;
* `merge_lora` folds the adapters into the kernels, W' = W + scale * down @ up, for sampling
  with the unmodified model (and for export): the same function up to float rounding.

Targets are Dense layers whose name is in `names` (SD's U-Net: `to_q`, `to_k`, `to_v`,
`to_out_0` of every self- and cross-attention). Adapter trees are keyed by the layer's path
joined with "/" (e.g. `down_blocks_1/attentions_0/transformer_blocks_0/attn1/to_q`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out_0")


class LoraAdapter(nn.Module):
    """The low-rank update of one Dense layer: (x @ down) @ up * scale."""

    features_in: int
    features_out: int
    rank: int
    scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        down = self.param(
            "down", nn.initializers.normal(1.0 / self.rank), (self.features_in, self.rank)
        )
        up = self.param("up", nn.initializers.zeros, (self.rank, self.features_out))
        return ((x @ down.astype(x.dtype)) @ up.astype(x.dtype)) * self.scale


def lora_targets(params: Any, names: Iterable[str] = ATTENTION_PROJECTIONS) -> dict:
    """{layer path: (features_in, features_out)} of every 2-D `kernel` whose layer is in `names`."""
    names = set(names)
    out = {}
    for path, leaf in flatten_dict(params).items():
        if path[-1] == "kernel" and len(path) > 1 and path[-2] in names and leaf.ndim == 2:
            out["/".join(path[:-1])] = (int(leaf.shape[0]), int(leaf.shape[1]))
    return dict(sorted(out.items()))


def init_lora(rng: jax.Array, targets: dict, rank: int) -> dict:
    """{layer path: {"down", "up"}} for every target; `up` is zero, so outputs are unchanged."""
    out = {}
    for i, (path, (fin, fout)) in enumerate(targets.items()):
        adapter = LoraAdapter(fin, fout, rank)
        out[path] = adapter.init(jax.random.fold_in(rng, i), jnp.zeros((1, fin)))["params"]
    return out


def merge_lora(params: Any, lora: dict, scale: float) -> Any:
    """`params` with W <- W + scale * down @ up for every adapted layer (same dtype as W)."""
    flat = dict(flatten_dict(params))
    for path, ad in lora.items():
        key = tuple(path.split("/")) + ("kernel",)
        w = flat[key]
        delta = (ad["down"].astype(jnp.float32) @ ad["up"].astype(jnp.float32)) * scale
        flat[key] = (w.astype(jnp.float32) + delta).astype(w.dtype)
    return unflatten_dict(flat)


def apply_with_lora(
    module: nn.Module, variables: dict, lora: dict, scale: float, *args, **kwargs
) -> Any:
    """`module.apply(variables, *args, **kwargs)` with each targeted Dense's output plus its
    adapter's. Traceable (the interception happens while tracing)."""

    def interceptor(next_fun, f_args, f_kwargs, context):
        out = next_fun(*f_args, **f_kwargs)
        mod = context.module
        if context.method_name != "__call__" or not isinstance(mod, nn.Dense):
            return out
        ad = lora.get("/".join(mod.path))
        if ad is None:
            return out
        x = f_args[0]
        fin, rank = ad["down"].shape
        adapter = LoraAdapter(fin, ad["up"].shape[1], rank, scale)
        return out + adapter.apply({"params": ad}, x).astype(out.dtype)

    with nn.intercept_methods(interceptor):
        return module.apply(variables, *args, **kwargs)


def count(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
