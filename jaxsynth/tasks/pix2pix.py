"""pix2pix (Isola et al. 2017; paper 004's "conditional GAN") as an engine Task: nuclei mask
(+ optional class label) -> H&E tile.

Objective (per engine step, D then G on the same batch):
  D: ½ [ℓ(D(c ‖ x), 1) + ℓ(D(c ‖ G(c)), 0)]           conditional PatchGAN sees input ‖ image
  G: ℓ(D(c ‖ G(c)), 1) + λ_L1 ‖x − G(c)‖₁ + λ_p · perceptual(x, G(c))
with ℓ = BCE (pix2pix) or least squares (`pix2pix.gan_loss`), λ_L1 = 100, and the perceptual
term (paper 004) on VGG-19 features from a local .pth or the fixed random-CNN fallback
(models/vgg.py). The condition c is the mask mapped to {-1, 1}, plus one constant one-hot plane
per class when `model.num_classes > 0`. Dropout in the decoder is the only noise.

`sample(state, rng, n, labels, masks=None)` draws from the EMA generator; without masks it
builds new layouts from the bank of training-split masks the state collects
(`pix2pix.mask_bank`, tasks/mask_bank.py: four flipped/rotated quadrants of same-class masks),
or random ellipses while the bank holds none of a class. That is what the engine's periodic
grids and `jaxsynth sample --num N` (no --masks) show, and what a study draws.
`translate(state, masks, labels)` is the deterministic mapping the scores and `jaxsynth sample
--masks` use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxsynth.errors import UserError
from jaxsynth.models.i2i import make_discriminator, make_generator
from jaxsynth.models.vgg import perceptual_distance
from jaxsynth.tasks.i2i_common import (
    check_num_steps,
    gan_loss,
    generate,
    load_perceptual,
    make_adam,
    perceptual_state,
)
from jaxsynth.tasks.mask_bank import bank_add, bank_init, bank_layouts
from jaxsynth.train.state import ModelState, TrainState


def random_masks(rng: jax.Array, n: int, size: int, nuclei: int = 24) -> jax.Array:
    """float32 {0, 1} (n, size, size, 1): unions of `nuclei` random ellipses whose radii span
    the phantom's nuclei (0.03-0.07 of the tile); for sample grids when no masks are given."""
    kc, kr, ka = jax.random.split(rng, 3)
    centres = jax.random.uniform(kc, (n, nuclei, 2))
    radii = jax.random.uniform(kr, (n, nuclei, 1), minval=0.03, maxval=0.07)
    aspect = jax.random.uniform(ka, (n, nuclei, 1), minval=0.7, maxval=1.3)
    grid = (jnp.arange(size) + 0.5) / size
    yy, xx = jnp.meshgrid(grid, grid, indexing="ij")
    dy = (yy[None, None] - centres[..., 0, None, None]) / (radii[..., None] * aspect[..., None])
    dx = (xx[None, None] - centres[..., 1, None, None]) * aspect[..., None] / radii[..., None]
    inside = (dy**2 + dx**2 < 1.0).any(axis=1)
    return inside.astype(jnp.float32)[..., None]


class Pix2PixTask:
    """Models: "generator" (U-Net), "discriminator" (conditional PatchGAN)[, "perceptual"]."""

    ema_name = "generator"

    def __init__(self, config: ml_collections.ConfigDict):
        check_num_steps(config)
        self.config = config
        self.name = "pix2pix"
        self.image_size = int(config.image_size)
        self.num_classes = int(config.model.num_classes)
        self.conditional = self.num_classes > 0
        self.generator = make_generator(config.model)
        self.discriminator = make_discriminator(config.model, self.image_size)
        p = config.pix2pix
        self.loss_kind = p.gan_loss
        gan_loss(jnp.zeros(()), 1.0, self.loss_kind)  # an unknown loss fails at construction
        self.l1_weight = float(p.l1_weight)
        self.ema_decay = float(p.ema_decay)
        self.sample_dropout = bool(p.sample_dropout)
        self.bank_size = int(p.mask_bank)
        self.perceptual_weight = float(config.perceptual.weight)
        self.perceptual, self._perceptual_params = load_perceptual(config)

    # -- conditioning ---------------------------------------------------------------------
    def condition(self, masks: jax.Array, labels: jax.Array | None) -> jax.Array:
        """masks {0,1} (B,S,S,1) [+ labels (B,)] -> the generator input (B,S,S,1[+K])."""
        c = masks.astype(jnp.float32) * 2.0 - 1.0
        if self.conditional:
            if labels is None:
                raise ValueError("a class-conditional pix2pix needs labels")
            planes = jax.nn.one_hot(labels, self.num_classes, dtype=c.dtype)[:, None, None, :]
            c = jnp.concatenate([c, jnp.broadcast_to(planes, (*c.shape[:3], self.num_classes))], -1)
        return c

    def _disc(self, params, cond, image):
        return self.discriminator.apply({"params": params}, jnp.concatenate([cond, image], -1))

    # -- Task interface ---------------------------------------------------------------------
    def init(self, rng: jax.Array, sample_batch: dict) -> TrainState:
        if "mask" not in sample_batch:
            raise UserError(
                "pix2pix needs nuclei masks: use a source with masks (data.source = 'phantom')"
            )
        kg, kd, kp, kstate = jax.random.split(rng, 4)
        n = min(2, sample_batch["image"].shape[0])
        labels = jnp.zeros((n,), jnp.int32) if self.conditional else None
        cond = self.condition(jnp.asarray(sample_batch["mask"][:n]), labels)
        g_params = self.generator.init(kg, cond)["params"]
        d_params = self.discriminator.init(
            kd, jnp.concatenate([cond, jnp.asarray(sample_batch["image"][:n])], -1)
        )["params"]
        models = {
            "generator": ModelState.create(
                g_params,
                make_adam(self.config),
                batch_stats=bank_init(self.bank_size, self.image_size) if self.bank_size else None,
                ema_decay=self.ema_decay,
            ),
            "discriminator": ModelState.create(d_params, make_adam(self.config), ema_decay=0.0),
        }
        if self.perceptual is not None:
            models["perceptual"] = perceptual_state(
                self.perceptual, self._perceptual_params, self.image_size, kp
            )
        return TrainState.create(kstate, models)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        g, d = state["generator"], state["discriminator"]
        real = batch["image"]
        cond = self.condition(batch["mask"], batch["label"] if self.conditional else None)
        k_drop, _ = jax.random.split(rng)
        fake = generate(self.generator, g.params, cond, k_drop)

        def d_loss_fn(d_params):
            l_real = self._disc(d_params, cond, real)
            l_fake = self._disc(d_params, cond, jax.lax.stop_gradient(fake))
            loss = 0.5 * (
                gan_loss(l_real, 1.0, self.loss_kind) + gan_loss(l_fake, 0.0, self.loss_kind)
            )
            return loss, (l_real.mean(), l_fake.mean())

        (d_loss, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d.params)
        d = d.apply_gradients(d_grads)

        def g_loss_fn(g_params):
            x = generate(self.generator, g_params, cond, k_drop)  # same dropout mask as D saw
            adv = gan_loss(self._disc(d.params, cond, x), 1.0, self.loss_kind)
            l1 = jnp.mean(jnp.abs(x - real))
            total = adv + self.l1_weight * l1
            perc = jnp.zeros(())
            if self.perceptual is not None:
                pp = {"params": state["perceptual"].params}
                perc = perceptual_distance(
                    self.perceptual.apply(pp, x), self.perceptual.apply(pp, real)
                )
                total = total + self.perceptual_weight * perc
            return total, (adv, l1, perc)

        (g_loss, (adv, l1, perc)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g.params)
        g = g.apply_gradients(g_grads)
        if self.bank_size:  # training-split layouts for sampling (tasks/mask_bank.py)
            g = g.replace(batch_stats=bank_add(g.batch_stats, batch["mask"], batch["label"]))
        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "g_adv_loss": adv,
            "l1_loss": l1,
            "d_real_logit": d_real,
            "d_fake_logit": d_fake,
            "d_grad_norm": optax.tree.norm(d_grads),
            "g_grad_norm": optax.tree.norm(g_grads),
        }
        if self.perceptual is not None:
            metrics["perceptual_loss"] = perc
        return state.replace(models={**state.models, "generator": g, "discriminator": d}), metrics

    def translate(self, state: TrainState, masks: jax.Array, labels=None, rng=None) -> jax.Array:
        """EMA generator on given masks: float32 (B,S,S,3) in [-1, 1]. Deterministic unless
        `pix2pix.sample_dropout` (pix2pix's test-time dropout) and an `rng` are given."""
        cond = self.condition(masks, labels if self.conditional else None)
        key = rng if (self.sample_dropout and rng is not None) else None
        return generate(self.generator, state["generator"].ema_params, cond, key)

    def sample(self, state: TrainState, rng: jax.Array, n: int, labels=None, masks=None):
        km, kl, kd = jax.random.split(rng, 3)
        if self.conditional and labels is None:
            labels = jax.random.randint(kl, (n,), 0, self.num_classes)
        if masks is None:
            kr, kb = jax.random.split(km)
            masks = random_masks(kr, n, self.image_size)
            if self.bank_size:
                bank = state["generator"].batch_stats
                masks = bank_layouts(bank, kb, labels if self.conditional else None, masks)
        return self.translate(state, masks, labels, kd)


def make_task(config: ml_collections.ConfigDict) -> Pix2PixTask:
    return Pix2PixTask(config)
