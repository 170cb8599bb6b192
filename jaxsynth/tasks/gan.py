"""GAN training as an engine Task: DCGAN / conditional GAN (non-saturating loss) and WGAN-GP.

One `GanTask` serves the three seed GANs; `config.model.loss` picks the objective:

* ``"nonsaturating"`` (papers 000, 003): D minimises BCE with one-sided label smoothing (real
  target `config.gan.real_label`, e.g. 0.9; fake target 0), G minimises -log D(G(z)). One D then
  one G update per engine step, each on fresh noise.
* ``"wgan_gp"`` (paper 004): the critic takes `n_critic` updates per engine step (a `lax.scan`),
  each on its own 1/n_critic slice of the global batch, with the gradient penalty
  λ·(‖∇D(x̂)‖ − 1)² on random interpolates; then one G update. So `batch_size` is the number of
  real images consumed per engine step and the critic batch is batch_size / n_critic.

DiffAugment (Zhao et al. 2020; colour, translation, cutout) is applied to every image D sees, real
and fake, with gradients flowing through it to G: the fix for the 100-image regime.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxsynth.models.gan import Discriminator, Generator
from jaxsynth.train.precision import cast_floats, compute_dtype, like
from jaxsynth.train.state import ModelState, TrainState

DIFFAUG_POLICIES = ("color", "translation", "cutout")


# ----------------------------------------------------------------------------- DiffAugment
def _color(x: jax.Array, rng: jax.Array) -> jax.Array:
    kb, ks, kc = jax.random.split(rng, 3)
    b = x.shape[0]
    x = x + (jax.random.uniform(kb, (b, 1, 1, 1)) - 0.5)  # brightness
    mean = x.mean(axis=3, keepdims=True)
    x = (x - mean) * (jax.random.uniform(ks, (b, 1, 1, 1)) * 2.0) + mean  # saturation
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * (jax.random.uniform(kc, (b, 1, 1, 1)) + 0.5) + mean  # contrast


def _translation(x: jax.Array, rng: jax.Array, ratio: float = 0.125) -> jax.Array:
    b, h, w, _ = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    kh, kw = jax.random.split(rng)
    dy = jax.random.randint(kh, (b,), -sh, sh + 1)
    dx = jax.random.randint(kw, (b,), -sw, sw + 1)
    padded = jnp.pad(x, ((0, 0), (sh, sh), (sw, sw), (0, 0)))

    def shift(img, oy, ox):
        return jax.lax.dynamic_slice(img, (sh - oy, sw - ox, 0), (h, w, img.shape[-1]))

    return jax.vmap(shift)(padded, dy, dx)


def _cutout(x: jax.Array, rng: jax.Array, ratio: float = 0.5) -> jax.Array:
    b, h, w, _ = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ky, kx = jax.random.split(rng)
    cy = jax.random.randint(ky, (b, 1, 1), 0, h + (1 - ch % 2))
    cx = jax.random.randint(kx, (b, 1, 1), 0, w + (1 - cw % 2))
    yy = jnp.arange(h)[None, :, None]
    xx = jnp.arange(w)[None, None, :]
    inside = (jnp.abs(yy - cy) < ch // 2 + ch % 2) & (jnp.abs(xx - cx) < cw // 2 + cw % 2)
    return x * (1.0 - inside[..., None].astype(x.dtype))


def diff_augment(x: jax.Array, rng: jax.Array, policy: tuple[str, ...]) -> jax.Array:
    """Differentiable augmentation of a batch in [-1, 1]; `policy` ⊆ DIFFAUG_POLICIES."""
    fns = {"color": _color, "translation": _translation, "cutout": _cutout}
    for name, key in zip(policy, jax.random.split(rng, max(len(policy), 1)), strict=False):
        x = fns[name](x, key)
    return x


def parse_policy(text: str) -> tuple[str, ...]:
    policy = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in policy if p not in DIFFAUG_POLICIES]
    if bad:
        raise ValueError(f"gan.diffaugment: unknown policy {bad} (use {DIFFAUG_POLICIES})")
    return policy


# ----------------------------------------------------------------------------- the task
def make_optimizer(config: ml_collections.ConfigDict, which: str) -> optax.GradientTransformation:
    """Adam(lr, β1, β2) or RMSprop(lr) from `config.optim` (`g_lr`/`d_lr`, `b1`, `b2`, `name`)."""
    o = config.optim
    lr = o.g_lr if which == "g" else o.d_lr
    if o.name == "adam":
        return optax.adam(lr, b1=o.b1, b2=o.b2)
    if o.name == "rmsprop":
        return optax.rmsprop(lr)
    raise ValueError(f"optim.name='{o.name}': use adam | rmsprop")


class GanTask:
    """DCGAN / cGAN / WGAN-GP (see module docstring). Models hold "generator", "discriminator"."""

    ema_name = "generator"

    def __init__(self, config: ml_collections.ConfigDict):
        m, g = config.model, config.gan
        self.config = config
        self.name = str(config.task)
        self.loss = m.loss
        if self.loss not in ("nonsaturating", "wgan_gp"):
            raise ValueError(f"model.loss='{self.loss}': use nonsaturating | wgan_gp")
        self.latent_dim = int(m.latent_dim)
        self.num_classes = int(m.num_classes)
        self.conditional = self.num_classes > 0
        self.generator = Generator(
            image_size=config.image_size,
            latent_dim=self.latent_dim,
            num_classes=self.num_classes,
            base_width=m.g_base_width,
            max_width=m.g_max_width,
            activation=m.g_activation,
            norm=m.g_norm,
            upsample_impl=m.upsample_impl,
        )
        self.discriminator = Discriminator(
            image_size=config.image_size,
            num_classes=self.num_classes,
            base_width=m.d_base_width,
            max_width=m.d_max_width,
            norm=m.d_norm,
            dropout=m.d_dropout,
        )
        # The penalty's critic: same parameters, im2col strided convs, whose gradient of the
        # input-gradient XLA:CPU runs ~10x faster than a strided conv's (models/layers.py).
        self.penalty_critic = self.discriminator.clone(conv_impl=str(m.d_penalty_conv_impl))
        self.policy = parse_policy(g.diffaugment)
        self.real_label = float(g.real_label)
        self.n_critic = int(g.n_critic) if self.loss == "wgan_gp" else 1
        self.gp_weight = float(g.gp_weight)
        self.ema_decay = float(g.ema_decay)
        self.dtype = compute_dtype(config)  # float32 params, this dtype inside apply
        if config.batch_size % self.n_critic:
            from jaxsynth.errors import UserError

            raise UserError(
                f"batch_size={config.batch_size} must be divisible by gan.n_critic="
                f"{self.n_critic} (each critic update takes its own slice of the batch)"
            )

    # -- helpers ---------------------------------------------------------------------------
    def _labels(self, rng: jax.Array, n: int) -> jax.Array | None:
        if not self.conditional:
            return None
        return jax.random.randint(rng, (n,), 0, self.num_classes)

    def _aug(self, x: jax.Array, rng: jax.Array) -> jax.Array:
        return diff_augment(x, rng, self.policy) if self.policy else x

    def _generate(self, g: ModelState, params, z, labels, train: bool):
        params, z = cast_floats(params, self.dtype), cast_floats(z, self.dtype)
        variables = {"params": params, **({"batch_stats": g.batch_stats} if g.batch_stats else {})}
        if train and g.batch_stats:
            out, new = self.generator.apply(
                variables, z, labels, train=True, mutable=["batch_stats"]
            )
            return out.astype(jnp.float32), like(new["batch_stats"], g.batch_stats)
        out = self.generator.apply(variables, z, labels, train=train)
        return out.astype(jnp.float32), g.batch_stats

    def _critic(self, params, x, labels, rng, module=None):
        return (
            (module or self.discriminator)
            .apply(
                {"params": cast_floats(params, self.dtype)},
                cast_floats(x, self.dtype),
                labels,
                train=True,
                rngs={"dropout": rng},
            )
            .astype(jnp.float32)
        )

    # -- Task interface ----------------------------------------------------------------------
    def init(self, rng: jax.Array, sample_batch: dict) -> TrainState:
        kg, kd, kstate = jax.random.split(rng, 3)
        n = min(2, sample_batch["image"].shape[0])
        z = jnp.zeros((n, self.latent_dim), jnp.float32)
        labels = jnp.zeros((n,), jnp.int32) if self.conditional else None
        g_vars = self.generator.init(kg, z, labels, train=False)
        d_vars = self.discriminator.init(kd, sample_batch["image"][:n], labels, train=False)
        g = ModelState.create(
            g_vars["params"],
            make_optimizer(self.config, "g"),
            batch_stats=g_vars.get("batch_stats"),
            ema_decay=self.ema_decay,
        )
        d = ModelState.create(d_vars["params"], make_optimizer(self.config, "d"), ema_decay=0.0)
        return TrainState.create(kstate, {"generator": g, "discriminator": d})

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        if self.loss == "wgan_gp":
            return self._wgan_step(state, batch, rng)
        return self._ns_step(state, batch, rng)

    def sample(self, state: TrainState, rng: jax.Array, n: int, labels=None) -> jax.Array:
        kz, kl = jax.random.split(rng)
        z = jax.random.normal(kz, (n, self.latent_dim))
        if self.conditional and labels is None:
            labels = self._labels(kl, n)
        g = state["generator"]
        return self.generator.apply(
            g.ema_variables, z, labels if self.conditional else None, train=False
        )

    # -- non-saturating (DCGAN / cGAN) ----------------------------------------------------
    def _ns_step(self, state: TrainState, batch: dict, rng: jax.Array):
        g, d = state["generator"], state["discriminator"]
        real = batch["image"]
        real_labels = batch["label"] if self.conditional else None
        b = real.shape[0]
        # One key per use: D's dropout differs between the real pass, the fake pass and the pass
        # inside G's loss (one shared key gave all three the same dropout mask).
        k = jax.random.split(rng, 10)
        z_d = jax.random.normal(k[0], (b, self.latent_dim))
        fake_labels_d = self._labels(k[1], b)
        fake, g_stats = self._generate(g, g.params, z_d, fake_labels_d, train=True)
        fake = jax.lax.stop_gradient(fake)

        def d_loss_fn(d_params):
            lr_ = self._critic(d_params, self._aug(real, k[2]), real_labels, k[3])
            lf = self._critic(d_params, self._aug(fake, k[4]), fake_labels_d, k[8])
            loss_real = optax.sigmoid_binary_cross_entropy(lr_, self.real_label).mean()
            loss_fake = optax.sigmoid_binary_cross_entropy(lf, 0.0).mean()
            return loss_real + loss_fake, (lr_.mean(), lf.mean())

        (d_loss, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d.params)
        d = d.apply_gradients(d_grads)
        g = g.replace(batch_stats=g_stats)

        z_g = jax.random.normal(k[5], (b, self.latent_dim))
        fake_labels_g = self._labels(k[6], b)

        def g_loss_fn(g_params):
            x, stats = self._generate(g, g_params, z_g, fake_labels_g, train=True)
            logits = self._critic(d.params, self._aug(x, k[7]), fake_labels_g, k[9])
            return optax.sigmoid_binary_cross_entropy(logits, 1.0).mean(), stats

        (g_loss, g_stats), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g.params)
        g = g.apply_gradients(g_grads, batch_stats=g_stats)
        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real_logit": d_real,
            "d_fake_logit": d_fake,
            "d_grad_norm": optax.tree.norm(d_grads),
            "g_grad_norm": optax.tree.norm(g_grads),
        }
        return state.replace(models={"generator": g, "discriminator": d}), metrics

    # -- WGAN-GP ------------------------------------------------------------------------------
    def _wgan_step(self, state: TrainState, batch: dict, rng: jax.Array):
        g, d = state["generator"], state["discriminator"]
        nc = self.n_critic
        real_all = batch["image"]
        labels_all = batch["label"]
        cb = real_all.shape[0] // nc
        # slice i = rows i, i+nc, ...: keeps the leading (sharded) axis intact, no resharding
        reals = real_all.reshape(cb, nc, *real_all.shape[1:]).swapaxes(0, 1)
        labels = labels_all.reshape(cb, nc).swapaxes(0, 1)
        k_critic, k_g = jax.random.split(rng)

        def critic_update(carry, xs):
            d, g_stats = carry
            real, real_labels, key = xs
            real_labels = real_labels if self.conditional else None
            k = jax.random.split(key, 8)  # a dropout key per critic pass (see _ns_step)
            z = jax.random.normal(k[0], (cb, self.latent_dim))
            fake_labels = self._labels(k[1], cb)
            fake, g_stats = self._generate(
                g.replace(batch_stats=g_stats), g.params, z, fake_labels, train=True
            )
            fake = jax.lax.stop_gradient(fake)
            eps = jax.random.uniform(k[2], (cb, 1, 1, 1))
            # interpolate between real and fake of the same (real) labels for the penalty
            x_hat = eps * real + (1.0 - eps) * fake

            def loss_fn(d_params):
                s_real = self._critic(d_params, self._aug(real, k[3]), real_labels, k[4]).mean()
                s_fake = self._critic(d_params, self._aug(fake, k[5]), fake_labels, k[6]).mean()

                def critic_sum(x):
                    return self._critic(d_params, x, real_labels, k[7], self.penalty_critic).sum()

                grads_x = jax.grad(critic_sum)(x_hat)
                norms = jnp.sqrt(jnp.sum(grads_x**2, axis=(1, 2, 3)) + 1e-12)
                gp = jnp.mean((norms - 1.0) ** 2)
                return s_fake - s_real + self.gp_weight * gp, (s_real - s_fake, gp)

            (loss, (w_dist, gp)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d.params)
            d = d.apply_gradients(grads)
            return (d, g_stats), (loss, w_dist, gp, optax.tree.norm(grads))

        keys = jax.random.split(k_critic, nc)
        # Unrolled: XLA:CPU ran the convolutions inside the scan's while-loop body ~12x slower
        # than the same program unrolled (paper-width WGAN-GP step at 64 px, batch 16 x 5:
        # 18.3 s vs 1.5 s); n_critic is small, so unrolling costs only compile time.
        (d, g_stats), (d_losses, w_dists, gps, d_norms) = jax.lax.scan(
            critic_update, (d, g.batch_stats), (reals, labels, keys), unroll=True
        )
        g = g.replace(batch_stats=g_stats)
        kz, kl, ka, kdrop = jax.random.split(k_g, 4)
        z = jax.random.normal(kz, (cb, self.latent_dim))
        fake_labels = self._labels(kl, cb)

        def g_loss_fn(g_params):
            x, stats = self._generate(g, g_params, z, fake_labels, train=True)
            return -self._critic(d.params, self._aug(x, ka), fake_labels, kdrop).mean(), stats

        (g_loss, g_stats), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g.params)
        g = g.apply_gradients(g_grads, batch_stats=g_stats)
        metrics = {
            "d_loss": d_losses.mean(),
            "g_loss": g_loss,
            "wasserstein": w_dists.mean(),
            "gradient_penalty": gps.mean(),
            "d_grad_norm": d_norms.max(),
            "g_grad_norm": optax.tree.norm(g_grads),
        }
        return state.replace(models={"generator": g, "discriminator": d}), metrics


def make_task(config: ml_collections.ConfigDict) -> GanTask:
    """Factory named by `config.task` (dcgan | cgan | wgan_gp)."""
    return GanTask(config)
