"""SimCLR-style contrastive training of `SslEncoder` on real TRAINING tiles, as an engine Task.

Why: offline there is no pathology foundation encoder, and the tumour-vs-normal CNN's features
only see what separates the classes. A contrastive encoder learns to tell each tile from all
others under augmentations that mimic nuisance variation (stain / brightness, crop, flip,
rotation), so what survives is tissue structure -- nuclei, and the stroma's fibre texture.

Step: two augmented views of each tile in the batch, one forward pass over both, the NT-Xent
loss (Chen et al. 2020, SimCLR) at temperature `ssl.temperature`. Augmentations run on device
inside the jitted step, keyed by the engine's per-step RNG (so resume stays exact).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxsynth.models.ssl_encoder import SslEncoder
from jaxsynth.train.state import ModelState, TrainState


def _augment_one(key: jax.Array, x: jax.Array, min_scale: float, jitter: float) -> jax.Array:
    """One view of one image (H, W, 3) in [-1, 1]: random crop (area >= min_scale) resized
    back, flips, a multiple of 90 degrees, per-channel gain/offset (stain), brightness."""
    h, w, _ = x.shape
    k = jax.random.split(key, 7)
    zoom = 1.0 / jnp.sqrt(jax.random.uniform(k[0], (), minval=min_scale, maxval=1.0))
    ty = jax.random.uniform(k[1], (), minval=h * (1 - zoom), maxval=0.0)
    tx = jax.random.uniform(k[2], (), minval=w * (1 - zoom), maxval=0.0)
    x = jax.image.scale_and_translate(
        x, (h, w, 3), (0, 1), jnp.stack([zoom, zoom]), jnp.stack([ty, tx]), "linear"
    )
    flips = jax.random.bernoulli(k[3], 0.5, (2,))
    x = jnp.where(flips[0], x[::-1], x)
    x = jnp.where(flips[1], x[:, ::-1], x)
    rot = jax.random.randint(k[4], (), 0, 4)
    x = jax.lax.switch(rot, [lambda a, r=r: jnp.rot90(a, r) for r in range(4)], x)
    gain = 1.0 + jitter * jax.random.uniform(k[5], (3,), minval=-1.0, maxval=1.0)
    shift = jitter * jax.random.uniform(k[6], (3,), minval=-1.0, maxval=1.0)
    return jnp.clip((x + 1.0) * gain - 1.0 + shift, -1.0, 1.0)


def augment(key: jax.Array, images: jax.Array, min_scale: float, jitter: float) -> jax.Array:
    """A batch of independent views (square images)."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(_augment_one, in_axes=(0, 0, None, None))(keys, images, min_scale, jitter)


def nt_xent(z: jax.Array, temperature: float) -> jax.Array:
    """SimCLR's loss for z = [views_1; views_2] (2B, D): each row's positive is its twin."""
    z = z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-6)
    n = z.shape[0]
    b = n // 2
    logits = (z @ z.T) / temperature
    logits = jnp.where(jnp.eye(n, dtype=bool), -1e9, logits)
    targets = jnp.concatenate([jnp.arange(b, n), jnp.arange(0, b)])
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


class SimclrTask:
    name = "simclr"
    ema_name = "encoder"
    conditional = False

    def __init__(self, config):
        self.config = config
        self.net = SslEncoder(widths=tuple(config.ssl.widths), proj_dim=config.ssl.proj_dim)

    def init(self, rng, sample_batch):
        params = self.net.init(rng, sample_batch["image"][:1])["params"]
        o = self.config.optim
        tx = optax.adamw(o.lr, weight_decay=o.weight_decay)
        return TrainState.create(rng, {"encoder": ModelState.create(params, tx, ema_decay=0.0)})

    def train_step(self, state, batch, rng):
        s = self.config.ssl
        x = batch["image"]
        k1, k2 = jax.random.split(rng)
        views = jnp.concatenate(
            [
                augment(k1, x, s.min_crop_area, s.colour_jitter),
                augment(k2, x, s.min_crop_area, s.colour_jitter),
            ]
        )

        def loss_fn(params):
            return nt_xent(self.net.apply({"params": params}, views), s.temperature)

        enc = state["encoder"]
        loss, grads = jax.value_and_grad(loss_fn)(enc.params)
        state = state.with_model("encoder", enc.apply_gradients(grads))
        return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def make_task(config):
    return SimclrTask(config)
