"""Pieces shared by the image-to-image tasks (pix2pix, CycleGAN): GAN losses, the optimiser with
the linear learning-rate decay both papers use, network application and the perceptual net.

Why one module: the two tasks differ in their objective (paired L1 vs cycle consistency), not in
how a PatchGAN logit becomes a loss or how the learning rate decays; keeping those once keeps
the two recipes comparable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxsynth.errors import UserError
from jaxsynth.train.state import ModelState

GAN_LOSSES = ("bce", "lsgan")


def gan_loss(logits: jax.Array, target: float, kind: str) -> jax.Array:
    """Mean PatchGAN loss against a constant target: BCE (pix2pix) or least squares (CycleGAN)."""
    if kind == "bce":
        return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)).mean()
    if kind == "lsgan":
        return jnp.mean((logits - target) ** 2)
    raise ValueError(f"gan loss '{kind}': use {' | '.join(GAN_LOSSES)}")


def lr_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Constant `optim.lr` for the first `optim.decay_start` fraction of `num_steps`, then linear
    to 0 at `num_steps` (pix2pix and CycleGAN: 100 epochs constant + 100 decaying)."""
    o = config.optim
    total = int(config.num_steps)
    start = int(round(float(o.decay_start) * total))
    if start >= total:
        return optax.constant_schedule(float(o.lr))
    return optax.join_schedules(
        [
            optax.constant_schedule(float(o.lr)),
            optax.linear_schedule(float(o.lr), 0.0, total - start),
        ],
        [start],
    )


def make_adam(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    o = config.optim
    return optax.adam(lr_schedule(config), b1=float(o.b1), b2=float(o.b2))


def generate(module, params, x: jax.Array, rng: jax.Array | None) -> jax.Array:
    """Apply a generator; `rng` given = dropout on (training, or pix2pix's noisy sampling)."""
    if rng is None:
        return module.apply({"params": params}, x, dropout=False)
    return module.apply({"params": params}, x, dropout=True, rngs={"dropout": rng})


def load_perceptual(config: ml_collections.ConfigDict):
    """(feature module, fixed params or None) for `perceptual.weight > 0`, else (None, None).

    VGG-19 from `perceptual.vgg19_weights` (a local torchvision .pth, read once, here, at task
    construction); without it the fixed random CNN fallback (models/vgg.py), whose params
    `perceptual_state` draws from the init key."""
    p = config.perceptual
    if float(p.weight) <= 0:
        return None, None
    from jaxsynth.models.vgg import RandomFeatures, VGG19Features, vgg19_params_from_state_dict

    if not p.vgg19_weights:
        return RandomFeatures(), None
    from jaxsynth.eval.torch_weights import load_state_dict

    try:
        params = vgg19_params_from_state_dict(load_state_dict(p.vgg19_weights), p.vgg19_weights)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's
        raise UserError(f"perceptual.vgg19_weights: {e}") from None
    return VGG19Features(), params


def perceptual_state(module, params, image_size: int, rng: jax.Array) -> ModelState:
    """The perceptual net's fixed params as a ModelState that is never updated
    (`optax.set_to_zero`): they ride in the TrainState so the step does not bake 80 MB of VGG
    constants into the compiled program."""
    if params is None:
        params = module.init(rng, jnp.zeros((1, image_size, image_size, 3)))["params"]
    return ModelState.create(params, optax.set_to_zero(), ema_decay=0.0)


def check_num_steps(config: ml_collections.ConfigDict) -> None:
    if int(config.num_steps) < 1:
        raise UserError(f"num_steps={config.num_steps}: must be >= 1")
