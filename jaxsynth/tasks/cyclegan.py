"""CycleGAN (Zhu et al. 2017; paper 004's unpaired translation) as an engine Task: stain
protocol A <-> protocol B, trained on UNPAIRED tiles.

The original recipe, per engine step:
  G (one Adam over G_AB and G_BA, as the reference implementation):
     ℓ(D_B(G_AB(a)), 1) + ℓ(D_A(G_BA(b)), 1)                      least-squares GAN
     + λ_cyc (‖G_BA(G_AB(a)) − a‖₁ + ‖G_AB(G_BA(b)) − b‖₁)       cycle consistency (λ = 10)
     + λ_id λ_cyc (‖G_AB(b) − b‖₁ + ‖G_BA(a) − a‖₁)               identity (λ_id = 0.5)
  D (one Adam over D_A and D_B): ½ [ℓ(D(real), 1) + ℓ(D(pooled fake), 0)] each, where the fake
     comes from an image pool of the last 50 generated images (returned with probability ½
     instead of the new one, Shrivastava et al. 2017).
Learning rate constant then linearly decayed to 0 (`optim.decay_start`).

The pools are arrays in the TrainState (the discriminator ModelState's `batch_stats`: PatchGAN
has no other mutable state), so checkpoints hold them and a resumed run continues bitwise.

Data: the engine's loader yields one array of images; a CycleGAN row is an A tile and an
unrelated B tile side by side, (S, 2S, 3) (`pack_unpaired`, built by `prepare_data`), so the
batches, the shuffle and the saved data position stay the engine's own. Flips/rotations must be
off for packed rows (a flip would swap the domains): `data.augment = "none"`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsynth.errors import UserError
from jaxsynth.models.i2i import make_discriminator, make_generator
from jaxsynth.tasks.i2i_common import check_num_steps, gan_loss, generate, make_adam
from jaxsynth.train.state import ModelState, TrainState


def pack_unpaired(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (N,S,S,3) A tiles and (M,S,S,3) B tiles -> (N,S,2S,3) rows [a_i | b_π(i)], with π
    a seeded random draw of B tiles (without replacement while M >= N)."""
    if a.shape[1:] != b.shape[1:]:
        raise UserError(f"domain A tiles {a.shape[1:]} and domain B tiles {b.shape[1:]} differ")
    rng = np.random.default_rng(seed)
    pick = (
        rng.permutation(len(b))[: len(a)] if len(b) >= len(a) else rng.integers(0, len(b), len(a))
    )
    return np.concatenate([a, b[pick]], axis=2)


def pool_query(pool: jax.Array, count: jax.Array, images: jax.Array, rng: jax.Array):
    """The CycleGAN image pool. Returns (images for D, new pool, new count).

    While the pool holds fewer than P images each new image is stored and returned; afterwards,
    with probability ½ a random stored image is returned and replaced by the new one, else the
    new image is returned and the pool left as is. Sequential over the batch, as the original.
    """
    size = pool.shape[0]
    if size == 0:
        return images, pool, count

    def one(carry, xs):
        pool, count = carry
        img, key = xs
        k_coin, k_idx = jax.random.split(key)
        not_full = count < size
        swap = (~not_full) & (jax.random.uniform(k_coin) > 0.5)
        idx = jax.random.randint(k_idx, (), 0, size)
        slot = jnp.where(not_full, count, idx)
        old = pool[slot]
        out = jnp.where(swap, old, img)
        pool = pool.at[slot].set(jnp.where(not_full | swap, img, old))
        return (pool, count + not_full.astype(count.dtype)), out

    keys = jax.random.split(rng, images.shape[0])
    (pool, count), out = jax.lax.scan(one, (pool, count), (images, keys))
    return out, pool, count


class CycleGanTask:
    """Models: "generator" (params {"ab", "ba"}), "discriminator" (params {"a", "b"}; pools in
    batch_stats). `translate(state, images, "ab"|"ba")` maps tiles with the EMA generators."""

    ema_name = "generator"
    conditional = False

    def __init__(self, config: ml_collections.ConfigDict):
        check_num_steps(config)
        if config.data.augment != "none":
            raise UserError(
                f"data.augment='{config.data.augment}': CycleGAN rows are A|B side by side, "
                "a flip would swap the domains; use 'none'"
            )
        self.config = config
        self.name = "cyclegan"
        self.image_size = int(config.image_size)
        self.generator = make_generator(config.model)
        self.discriminator = make_discriminator(config.model, self.image_size)
        cg = config.cyclegan
        self.loss_kind = cg.gan_loss
        gan_loss(jnp.zeros(()), 1.0, self.loss_kind)
        self.cycle_weight = float(cg.cycle_weight)
        self.identity_weight = float(cg.identity_weight)
        self.pool_size = int(cg.pool_size)
        self.ema_decay = float(cg.ema_decay)

    # -- data --------------------------------------------------------------------------------
    def split_domains(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        s = self.image_size
        if images.shape[1] != s or images.shape[2] != 2 * s:
            raise UserError(
                f"CycleGAN batches are A|B rows of {s}x{2 * s}, got {images.shape[1:3]} "
                "(build the training data with CycleGanTask.prepare_data)"
            )
        return images[:, :, :s], images[:, :, s:]

    def prepare_data(self, data):
        """The run's training tiles (domain A) packed with domain-B tiles of other tissue."""
        from jaxsynth.data.phantom import render_ids

        cg, c = self.config.cyclegan, self.config
        if c.data.source != "phantom":
            raise UserError(
                f"data.source='{c.data.source}': CycleGAN's domain B is rendered by the phantom "
                "(stain protocol B); real two-protocol data is not wired in yet"
            )
        a = data.arrays["image"]
        labels = np.asarray(data.arrays["label"])
        # B: different phantom tissue (seed `cyclegan.b_seed`), same class mix, protocol B
        ids = [f"phantom/{int(cg.b_seed)}/{2 * i + int(lab)}" for i, lab in enumerate(labels)]
        b, _ = render_ids(ids, self.image_size, cg.b_protocol, float(c.data.phantom.difficulty))
        packed = pack_unpaired(a, b, int(c.seed))
        return dataclasses.replace(
            data,
            arrays={"image": packed, "label": labels},
            real_images=None,
            heldout_images=None,
            heldout_labels=None,
            domain_features=None,
        )

    # -- Task interface ----------------------------------------------------------------------
    def init(self, rng: jax.Array, sample_batch: dict) -> TrainState:
        # shapes only: a packed A|B batch (training) or a square one (`load_trained`)
        a = jnp.asarray(sample_batch["image"])[:1, :, : self.image_size]
        k = jax.random.split(rng, 5)
        g_params = {
            "ab": self.generator.init(k[0], a)["params"],
            "ba": self.generator.init(k[1], a)["params"],
        }
        d_params = {
            "a": self.discriminator.init(k[2], a)["params"],
            "b": self.discriminator.init(k[3], a)["params"],
        }
        pool = jnp.zeros((self.pool_size, *a.shape[1:]), jnp.float32)
        pools = {
            "pool_a": pool,
            "pool_b": pool,
            "count_a": jnp.zeros((), jnp.int32),
            "count_b": jnp.zeros((), jnp.int32),
        }
        models = {
            "generator": ModelState.create(
                g_params, make_adam(self.config), ema_decay=self.ema_decay
            ),
            "discriminator": ModelState.create(
                d_params, make_adam(self.config), batch_stats=pools, ema_decay=0.0
            ),
        }
        return TrainState.create(k[4], models)

    def _d(self, params, x):
        return self.discriminator.apply({"params": params}, x)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        g, d = state["generator"], state["discriminator"]
        real_a, real_b = self.split_domains(batch["image"])
        k = jax.random.split(rng, 8)
        lk, lc, li = self.loss_kind, self.cycle_weight, self.identity_weight * self.cycle_weight

        def g_loss_fn(gp):
            fake_b = generate(self.generator, gp["ab"], real_a, k[0])
            fake_a = generate(self.generator, gp["ba"], real_b, k[1])
            adv = gan_loss(self._d(d.params["b"], fake_b), 1.0, lk) + gan_loss(
                self._d(d.params["a"], fake_a), 1.0, lk
            )
            rec_a = generate(self.generator, gp["ba"], fake_b, k[2])
            rec_b = generate(self.generator, gp["ab"], fake_a, k[3])
            cycle = jnp.mean(jnp.abs(rec_a - real_a)) + jnp.mean(jnp.abs(rec_b - real_b))
            total = adv + lc * cycle
            ident = jnp.zeros(())
            if li > 0:
                id_b = generate(self.generator, gp["ab"], real_b, k[4])
                id_a = generate(self.generator, gp["ba"], real_a, k[5])
                ident = jnp.mean(jnp.abs(id_b - real_b)) + jnp.mean(jnp.abs(id_a - real_a))
                total = total + li * ident
            return total, (adv, cycle, ident, fake_a, fake_b)

        (g_loss, (adv, cycle, ident, fake_a, fake_b)), g_grads = jax.value_and_grad(
            g_loss_fn, has_aux=True
        )(g.params)
        g = g.apply_gradients(g_grads)

        s = d.batch_stats
        fake_a, pool_a, count_a = pool_query(
            s["pool_a"], s["count_a"], jax.lax.stop_gradient(fake_a), k[6]
        )
        fake_b, pool_b, count_b = pool_query(
            s["pool_b"], s["count_b"], jax.lax.stop_gradient(fake_b), k[7]
        )

        def d_loss_fn(dp):
            def one(params, real, fake):
                return 0.5 * (
                    gan_loss(self._d(params, real), 1.0, lk)
                    + gan_loss(self._d(params, fake), 0.0, lk)
                )

            la, lb = one(dp["a"], real_a, fake_a), one(dp["b"], real_b, fake_b)
            return la + lb, (la, lb)

        (d_loss, (d_a, d_b)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d.params)
        pools = {"pool_a": pool_a, "pool_b": pool_b, "count_a": count_a, "count_b": count_b}
        d = d.apply_gradients(d_grads, batch_stats=pools)
        metrics = {
            "g_loss": g_loss,
            "g_adv_loss": adv,
            "cycle_loss": cycle,
            "identity_loss": ident,
            "d_loss": d_loss,
            "d_a_loss": d_a,
            "d_b_loss": d_b,
            "g_grad_norm": optax.tree.norm(g_grads),
            "d_grad_norm": optax.tree.norm(d_grads),
        }
        return state.replace(models={"generator": g, "discriminator": d}), metrics

    def translate(self, state: TrainState, images: jax.Array, direction: str = "ab") -> jax.Array:
        """EMA generator `direction` ("ab": protocol A -> B, "ba": B -> A) on float [-1,1] tiles."""
        if direction not in ("ab", "ba"):
            raise ValueError(f"direction '{direction}': use ab | ba")
        return generate(self.generator, state["generator"].ema_params[direction], images, None)


def make_task(config: ml_collections.ConfigDict) -> CycleGanTask:
    return CycleGanTask(config)
