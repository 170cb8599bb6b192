"""Train-state pytrees shared by every model: a `ModelState` per network, one `TrainState`.

WHY a two-level family: a GAN trains two networks with separate optimisers, a DDPM or a classifier
one. Rather than a GAN-specific state, every network is a `ModelState` (params, optimiser state,
EMA of params, mutable collections such as BatchNorm statistics) and the run's `TrainState` holds
a dict of them plus the step counter and the base RNG key. Everything the engine checkpoints,
shards and donates is in this one pytree, so resume is exact by construction.

Static (non-pytree) fields hold the optimiser and the EMA decay: they come from the config and are
rebuilt by `Task.init`, so a checkpoint stores only arrays.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any


@struct.dataclass
class ModelState:
    """One network under training.

    Fields:
      params: the trainable parameters (a flax `params` collection).
      opt_state: the optax state of `tx`.
      ema_params: exponential moving average of `params` (what sampling and eval use).
      batch_stats: other mutable collections (e.g. BatchNorm `batch_stats`); `{}` when none.
      ema_updates: int32 count of EMA updates (drives the EMA warm-up).
      tx: the optax transformation (static).
      ema_decay: the EMA decay (static); 0.0 makes `ema_params` a copy of `params`.
    """

    params: PyTree
    opt_state: PyTree
    ema_params: PyTree
    batch_stats: PyTree
    ema_updates: jax.Array
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    ema_decay: float = struct.field(pytree_node=False, default=0.999)

    @classmethod
    def create(
        cls,
        params: PyTree,
        tx: optax.GradientTransformation,
        *,
        batch_stats: PyTree | None = None,
        ema_decay: float = 0.999,
    ) -> ModelState:
        """A fresh state: optimiser initialised, EMA starting at `params`."""
        return cls(
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params),
            batch_stats={} if batch_stats is None else batch_stats,
            ema_updates=jnp.zeros((), jnp.int32),
            tx=tx,
            ema_decay=float(ema_decay),
        )

    @property
    def variables(self) -> dict:
        """`{"params": params, **mutable}`: what `module.apply` takes for training."""
        return {"params": self.params, **self._mutable()}

    @property
    def ema_variables(self) -> dict:
        """Like `variables`, with the EMA params (for sampling / evaluation)."""
        return {"params": self.ema_params, **self._mutable()}

    def _mutable(self) -> dict:
        return {"batch_stats": self.batch_stats} if self.batch_stats else {}

    def apply_gradients(self, grads: PyTree, *, batch_stats: PyTree | None = None) -> ModelState:
        """One optimiser step + EMA update (+ new BatchNorm statistics if given).

        The EMA uses a warm-up, decay_t = min(ema_decay, (1 + t) / (10 + t)), so that short runs
        (and the first thousand steps of long ones) do not sample from a near-initial generator.
        """
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        if self.ema_decay == 0.0:  # no average wanted (classifiers): skip a pass over params
            ema = params
        else:
            t = self.ema_updates.astype(jnp.float32)
            decay = jnp.minimum(self.ema_decay, (1.0 + t) / (10.0 + t))
            ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, self.ema_params, params)
        return self.replace(
            params=params,
            opt_state=opt_state,
            ema_params=ema,
            batch_stats=self.batch_stats if batch_stats is None else batch_stats,
            ema_updates=self.ema_updates + 1,
        )


@struct.dataclass
class TrainState:
    """The whole run's state: `step` (int32, optimiser steps done), `rng` (the base key; the engine
    derives step randomness as `fold_in(rng, step)`), `models` (name -> ModelState, e.g.
    {"generator": ..., "discriminator": ...} or {"model": ...})."""

    step: jax.Array
    rng: jax.Array
    models: dict[str, ModelState]

    @classmethod
    def create(cls, rng: jax.Array, models: dict[str, ModelState]) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), rng=rng, models=dict(models))

    def __getitem__(self, name: str) -> ModelState:
        return self.models[name]

    def with_model(self, name: str, model_state: ModelState) -> TrainState:
        """A copy with `models[name]` replaced (pure)."""
        return self.replace(models={**self.models, name: model_state})
