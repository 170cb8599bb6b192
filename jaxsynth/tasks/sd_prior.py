"""DreamBooth-style prior preservation (Ruiz et al. 2023) for the SD fine-tuning Task.

Why: fine-tuning SD on a few dozen tumour tiles teaches the tumour prompt, but it also drags the
words the prompt shares with every other tile ("H&E histopathology tile") towards tumour
("language drift"), and a small set is easy to overfit. DreamBooth's remedy: before training,
sample the *base* model for a generic class prompt; during training, every batch of instance
latents is paired with as many of those prior latents under the class prompt, and the loss is

    loss = loss_instance + prior_loss_weight * loss_prior,

so the model keeps producing what the base model produced for the class prompt while it learns
the instance prompt.

Choices made here (docs/sd_finetune.md, "Prior preservation"):

* The prior samples are generated inside `Task.init` (jitted by the engine) by the task's own
  DDIM sampler with guidance, on the base U-Net (full: the float32 copy training starts from;
  LoRA: the frozen base, which the zero adapters leave unchanged), from a key folded out of the
  run's seed. They go into the state as the "prior" ModelState (identity optimiser), so they are
  checkpointed with the run: a resumed run reads them back, nothing is regenerated.
* They are kept as the sampler's final latents (scaled, the space the U-Net is trained in), not
  decoded to images and re-encoded: that skips a VAE decode + encode per sample and the uint8
  rounding, and the prior is exactly what the base model put out in the space the loss uses.
* Sampling runs in chunks of `batch_size` samples (`lax.map`) with all starting noise drawn at
  once, so the prior does not depend on the chunk size and the memory stays that of a batch.
* The instance half draws its timesteps, noise and prompt dropout exactly as
  `diffusion_loss` does with the same key; the prior half uses `fold_in(key, 1)`. Both halves go
  through ONE U-Net call (a 2B batch, as diffusers' DreamBooth script does), then split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsynth.diffusion.losses import ApplyFn, loss_weights, noised, prediction_target
from jaxsynth.diffusion.schedules import Schedule
from jaxsynth.errors import UserError
from jaxsynth.train.mesh import batch_sharding, make_mesh

PRIOR_SEED_FOLD = 0x5052  # fold_in(init rng, this): the prior samples' key ("PR")


def check_prior_config(s, num_timesteps: int) -> None:
    """One-line errors for `sd_ft` prior-preservation settings that cannot work."""
    if int(s.num_class_images) < 1:
        raise UserError(
            f"sd_ft.num_class_images={s.num_class_images}: prior preservation needs at least "
            "1 base-model sample (or set sd_ft.prior_preservation=False)"
        )
    if not float(s.prior_loss_weight) >= 0.0:
        raise UserError(f"sd_ft.prior_loss_weight={s.prior_loss_weight}: must be >= 0")
    if not 1 <= int(s.prior_sampler_steps) <= num_timesteps:
        raise UserError(
            f"sd_ft.prior_sampler_steps={s.prior_sampler_steps}: must be in 1..{num_timesteps}"
        )
    if not s.prior_prompt or s.prior_prompt in tuple(s.prompts):
        raise UserError(
            f"sd_ft.prior_prompt='{s.prior_prompt}': must be a generic prompt that is neither "
            "empty (the guidance null) nor one of sd_ft.prompts"
        )


def draw_prior(latents: jax.Array, rng: jax.Array, b: int, label: int):
    """`b` of the stored prior latents, drawn uniformly with replacement with the step's key
    (resume stays exact), sharded like a batch; and their label (the prior prompt's row)."""
    z = latents[jax.random.randint(rng, (b,), 0, latents.shape[0])]
    z = jax.lax.with_sharding_constraint(z, batch_sharding(make_mesh()))
    return z, jnp.full((b,), label, jnp.int32)


def prior_preservation_loss(
    apply_fn: ApplyFn,
    params,
    schedule: Schedule,
    x0: jax.Array,
    labels: jax.Array,
    prior_x0: jax.Array,
    prior_labels: jax.Array,
    rng: jax.Array,
    *,
    prior_weight: float,
    prediction: str = "eps",
    weighting: str = "none",
    snr_gamma: float = 5.0,
    label_dropout: float = 0.0,
    num_classes: int = 0,
    offset_noise: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`loss_instance + prior_weight * loss_prior`, each the weighted MSE of its half (the
    `diffusion_loss` of that half); metrics `loss`, `loss_instance`, `loss_prior` and `mse`
    (the instance half's unweighted MSE, as without prior preservation)."""
    kw = dict(label_dropout=label_dropout, num_classes=num_classes, offset_noise=offset_noise)
    xi, ti, ni, li = noised(schedule, x0, rng, labels, **kw)
    xp, tp, np_, lp = noised(schedule, prior_x0, jax.random.fold_in(rng, 1), prior_labels, **kw)
    x0s, x_t = jnp.concatenate([x0, prior_x0]), jnp.concatenate([xi, xp])
    t, noise = jnp.concatenate([ti, tp]), jnp.concatenate([ni, np_])
    dropout_rng = jax.random.split(rng, 4)[3]
    out = apply_fn(params, x_t, t, jnp.concatenate([li, lp]), None, True, {"dropout": dropout_rng})
    target = prediction_target(schedule, prediction, x0s, t, noise)
    per_example = jnp.mean(jnp.square(out.astype(jnp.float32) - target), axis=(1, 2, 3))
    weighted = loss_weights(schedule, t, weighting, prediction, snr_gamma) * per_example
    b = x0.shape[0]
    loss_instance, loss_prior = jnp.mean(weighted[:b]), jnp.mean(weighted[b:])
    loss = loss_instance + prior_weight * loss_prior
    return loss, {
        "loss": loss,
        "loss_instance": loss_instance,
        "loss_prior": loss_prior,
        "mse": jnp.mean(per_example[:b]),
    }


def generate_prior_latents(ddim, n: int, chunk: int, shape: tuple, rng: jax.Array) -> jax.Array:
    """`n` sampler outputs (n, *shape): `ddim(x_T)` on chunks of `chunk` starting latents, all
    drawn at once from `rng` (so the result does not depend on `chunk`)."""
    chunk = max(1, min(chunk, n))
    m = -(-n // chunk)
    x = jax.random.normal(rng, (n, *shape), jnp.float32)
    x = jnp.pad(x, ((0, m * chunk - n),) + ((0, 0),) * len(shape)).reshape(m, chunk, *shape)
    return jax.lax.map(ddim, x).reshape(m * chunk, *shape)[:n]
