"""Mixed precision: float32 parameters and optimiser state, bfloat16 (or float32) compute.

`config.train.compute_dtype` = "float32" (default) or "bfloat16". With bfloat16 a task casts its
parameters and inputs to bfloat16 right before `module.apply` and its outputs back to float32
for the loss. WHY this works without a second set of "master" weights: the cast sits inside the
differentiated function, so autodiff casts the gradients back to float32 and the optimiser
updates float32 parameters. Worth it on GPU/TPU (bf16 matmul/conv units, half the activation
memory); on CPU it is usually slower (BENCHMARKS.md) and is there to test the code path.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxsynth.errors import UserError

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
    """The dtype named by `config.train.compute_dtype` (its default is the engine's)."""
    from jaxsynth.train.defaults import engine_settings

    name = str(engine_settings(config).compute_dtype)
    if name not in COMPUTE_DTYPES:
        raise UserError(f"train.compute_dtype='{name}' is not one of {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def cast_floats(tree: Any, dtype: Any) -> Any:
    """Every floating leaf of `tree` as `dtype` (integer leaves, e.g. labels, untouched)."""
    if dtype == jnp.float32:
        return tree

    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x

    return jax.tree.map(cast, tree)


def like(new: Any, old: Any) -> Any:
    """`new` with each leaf cast to the dtype of the matching leaf of `old` (e.g. BatchNorm
    statistics computed in bfloat16 stored back in float32, so the state's dtypes never change)."""
    return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)
