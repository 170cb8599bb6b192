"""Stable Diffusion fine-tuning (full U-Net or LoRA) as a Task of the one training engine.

What is trained: SD's U-Net denoises VAE latents conditioned on CLIP embeddings of one prompt
per class ("H&E tile, normal tissue" / "..., metastatic tumour"); with probability
`sd_ft.prompt_dropout` the prompt is replaced by the empty one, so classifier-free guidance works
when sampling. The VAE and the text encoder are frozen: they sit in the state as the "frozen"
ModelState (identity optimiser, no EMA), checkpointed with the run and never updated.
`sd_ft.mode = "full"` trains every U-Net parameter; `"lora"` trains rank-r adapters on the
attention projections (`jaxsynth.models.lora`) over the frozen U-Net, merged for sampling.

The loss is the project's own (`jaxsynth.diffusion.losses.diffusion_loss`: eps or v target,
min-SNR weighting, offset noise, prompt dropout) on the SD noise schedule rebuilt from the
folder's scheduler config as a project `Schedule`; sampling is the project's DDIM update on
latents with guidance, then the VAE decoder. Nothing here calls diffusers' training code
(removed upstream); diffusers provides the network modules only.

Latents: `prepare(images, labels)` encodes every training tile once with the frozen VAE (all 8
flips/rotations with `sd_ft.cache_flips`) and keeps the posterior mean and std on the device; each
step then draws its batch from that cache with the step key (uniform with replacement; the
engine's image batch is not used), so resume stays exact and the VAE encoder never runs in the
loop. Without `prepare` (e.g. `jaxsynth train`), each step encodes the engine's batch instead.

Prior preservation (`sd_ft.prior_preservation`, DreamBooth; `jaxsynth.tasks.sd_prior`): `init`
samples `sd_ft.num_class_images` latents of the base model for `sd_ft.prior_prompt` into the
state; each step adds as many of them as it has instance latents, under that prompt, and the loss
becomes `loss_instance + sd_ft.prior_loss_weight * loss_prior`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsynth.diffusion.losses import WEIGHTINGS, diffusion_loss
from jaxsynth.diffusion.samplers import ddim_timesteps
from jaxsynth.diffusion.schedules import Schedule, predict_x0_and_eps, schedule_from_betas
from jaxsynth.errors import UserError
from jaxsynth.models import lora as lora_lib
from jaxsynth.tasks import sd_prior
from jaxsynth.train.mesh import batch_sharding, make_mesh
from jaxsynth.train.precision import cast_floats, compute_dtype
from jaxsynth.train.state import ModelState, TrainState

MODES = ("full", "lora")


@dataclasses.dataclass
class SdModel:
    """The loaded SD folder: Flax modules, numpy params, scheduler config, prompt token ids."""

    unet: Any
    vae: Any
    text_encoder: Any
    params: dict  # {"unet", "vae", "text_encoder"} -> nested dicts of numpy arrays
    scheduler_config: dict
    # int32 (num_classes + 1, tokens): the class prompts, then the empty prompt (the guidance
    # null); with prior preservation one more row, the prior prompt
    prompt_ids: np.ndarray


def sd_betas(scheduler_config: dict) -> np.ndarray:
    """Training betas of an SD scheduler config ("scaled_linear" as SD v1.x, or "linear")."""
    kind = scheduler_config.get("beta_schedule", "linear")
    t = int(scheduler_config.get("num_train_timesteps", 1000))
    b0 = float(scheduler_config.get("beta_start", 0.0001))
    b1 = float(scheduler_config.get("beta_end", 0.02))
    if kind == "scaled_linear":
        return np.linspace(b0**0.5, b1**0.5, t, dtype=np.float64) ** 2
    if kind == "linear":
        return np.linspace(b0, b1, t, dtype=np.float64)
    raise UserError(
        f"scheduler config: beta_schedule '{kind}' is not supported (linear, scaled_linear)"
    )


def frozen_state(params: Any) -> ModelState:
    """A ModelState that never changes: identity optimiser, no EMA copy."""
    tx = optax.identity()
    return ModelState(
        params=params,
        opt_state=tx.init(params),
        ema_params={},
        batch_stats={},
        ema_updates=jnp.zeros((), jnp.int32),
        tx=tx,
        ema_decay=0.0,
    )


class SdFinetuneTask:
    """See the module docstring. Built by `jaxsynth.sd.finetune.make_task` (which loads SD)."""

    name = "sd_finetune"
    ema_name = "unet"
    conditional = True

    def __init__(self, config: ml_collections.ConfigDict, sd: SdModel):
        s = config.sd_ft
        if s.mode not in MODES:
            raise UserError(f"sd_ft.mode='{s.mode}': use one of {MODES}")
        if s.prediction not in ("eps", "v"):
            raise UserError(f"sd_ft.prediction='{s.prediction}': use eps | v")
        if s.loss_weighting not in WEIGHTINGS:
            raise UserError(f"sd_ft.loss_weighting='{s.loss_weighting}': use one of {WEIGHTINGS}")
        f = 2 ** (len(sd.vae.config.block_out_channels) - 1)
        if config.image_size % f:
            raise UserError(
                f"image_size={config.image_size}: must be a multiple of the VAE factor {f}"
            )
        self.config, self.sd = config, sd
        self.num_classes = len(config.data.classes)
        self.schedule: Schedule = schedule_from_betas(sd_betas(sd.scheduler_config))
        self.scaling = float(getattr(sd.vae.config, "scaling_factor", 0.18215))
        self.latent_hw = config.image_size // f
        self.latent_c = int(sd.unet.config.in_channels)
        self.dtype = compute_dtype(config)
        self.unet = sd.unet.clone(dtype=self.dtype) if self.dtype != jnp.float32 else sd.unet
        self.lora_scale = float(s.lora_alpha) / float(s.lora_rank)
        self.lora_targets = lora_lib.lora_targets(sd.params["unet"], tuple(s.lora_targets))
        if s.mode == "lora" and not self.lora_targets:
            raise UserError(f"sd_ft.lora_targets={tuple(s.lora_targets)}: no such Dense layers")
        self.cache: dict[str, jax.Array] | None = None
        # the prior prompt's row in the prompt table, or None without prior preservation
        self.prior_label = self.num_classes + 1 if s.prior_preservation else None
        if s.prior_preservation:
            sd_prior.check_prior_config(s, self.schedule.num_timesteps)

    # -- latents -----------------------------------------------------------------------------
    def encode(self, vae_params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, std) of the VAE posterior, NHWC, for images in [-1, 1] NHWC."""
        x = jnp.transpose(images, (0, 3, 1, 2))
        dist = self.sd.vae.apply(
            {"params": vae_params}, x, deterministic=True, method=self.sd.vae.encode
        ).latent_dist
        return dist.mean, dist.std

    def prepare(self, images: np.ndarray, labels: np.ndarray, chunk: int = 64) -> None:
        """Encode the training tiles (uint8 NHWC) once; the steps then read this cache."""
        if not self.config.sd_ft.cache_latents:
            return
        images = np.asarray(images)
        labels = np.asarray(labels, np.int32)
        if self.config.sd_ft.cache_flips:
            variants = [
                np.rot90(im, k, axes=(1, 2))
                for im in (images, images[:, :, ::-1])
                for k in range(4)
            ]
            images = np.concatenate(variants)
            labels = np.tile(labels, 8)
        enc = jax.jit(self.encode)
        vae = self.sd.params["vae"]
        means, stds = [], []
        for i in range(0, len(images), chunk):
            x = images[i : i + chunk].astype(np.float32) / 127.5 - 1.0
            m, sd = enc(vae, x)
            means.append(np.asarray(m))
            stds.append(np.asarray(sd))
        self.cache = {
            "mean": jnp.asarray(np.concatenate(means)),
            "std": jnp.asarray(np.concatenate(stds)),
            "label": jnp.asarray(labels),
        }

    def _latents(self, state: TrainState, batch: dict, rng: jax.Array):
        """Scaled latents (B, h, w, C) and labels for this step: from the cache or the batch."""
        k_idx, k_eps = jax.random.split(rng)
        b = batch["label"].shape[0]
        if self.cache is not None:
            idx = jax.random.randint(k_idx, (b,), 0, self.cache["label"].shape[0])
            mean, std = self.cache["mean"][idx], self.cache["std"][idx]
            labels = self.cache["label"][idx]
            sharding = batch_sharding(make_mesh())
            mean, std, labels = (
                jax.lax.with_sharding_constraint(a, sharding) for a in (mean, std, labels)
            )
        else:
            mean, std = self.encode(state["frozen"].params["vae"], batch["image"])
            labels = batch["label"]
        z = mean + std * jax.random.normal(k_eps, mean.shape, mean.dtype)
        return jax.lax.stop_gradient(z * self.scaling), labels

    # -- the U-Net as the diffusion code expects it -----------------------------------------
    def prompt_embeddings(self, text_params) -> jax.Array:
        """(num_classes + 1, tokens, width): each class prompt, then the empty prompt."""
        ids = jnp.asarray(self.sd.prompt_ids)
        out = self.sd.text_encoder(ids, params=text_params, train=False)[0]
        return jax.lax.stop_gradient(out)

    def _unet_fn(self, trainable, frozen: dict, emb: jax.Array):
        """apply_fn(variables, x_t, t, labels, cond, train, rngs) for `diffusion_loss`."""
        mode = self.config.sd_ft.mode

        def run(params, x, t, ctx):
            params = cast_floats(params, self.dtype)
            x = jnp.transpose(x, (0, 3, 1, 2)).astype(self.dtype)
            ctx = ctx.astype(self.dtype)
            if mode == "lora":
                lora = cast_floats(params["lora"], self.dtype)
                base = cast_floats(frozen["unet"], self.dtype)
                out = lora_lib.apply_with_lora(
                    self.unet, {"params": base}, lora, self.lora_scale, x, t, ctx, train=False
                ).sample
            else:
                out = self.unet.apply({"params": params["unet"]}, x, t, ctx, train=False).sample
            return jnp.transpose(out, (0, 2, 3, 1)).astype(jnp.float32)

        if self.config.sd_ft.remat:
            run = jax.checkpoint(
                run, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable
            )

        def apply_fn(variables, x, t, labels, cond, train, rngs):
            return run(variables, x, t, emb[labels])

        return apply_fn

    # -- Task contract -----------------------------------------------------------------------
    def _optimizer(self) -> optax.GradientTransformation:
        o = self.config.optim
        lr = optax.linear_schedule(0.0, o.lr, int(o.warmup_steps)) if o.warmup_steps > 0 else o.lr
        parts = [optax.clip_by_global_norm(float(o.grad_clip))] if o.grad_clip > 0 else []
        parts.append(optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=float(o.weight_decay)))
        return optax.chain(*parts)

    def init(self, rng: jax.Array, sample_batch: dict) -> TrainState:
        p = self.sd.params
        k_prior = jax.random.fold_in(rng, sd_prior.PRIOR_SEED_FOLD)
        frozen = {"vae": p["vae"], "text_encoder": p["text_encoder"]}
        if self.config.sd_ft.mode == "lora":
            frozen["unet"] = p["unet"]
            k_lora, rng = jax.random.split(rng)
            trainable = {
                "lora": lora_lib.init_lora(
                    k_lora, self.lora_targets, int(self.config.sd_ft.lora_rank)
                )
            }
        else:
            trainable = {"unet": p["unet"]}
        trainable = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), trainable)
        unet = ModelState.create(
            trainable, self._optimizer(), ema_decay=float(self.config.sd_ft.ema_decay)
        )
        models = {"unet": unet, "frozen": frozen_state(frozen)}
        if self.prior_label is not None:
            # the U-Net `sample_with` uses at step 0 (zero adapters merge to the base exactly)
            base = p["unet"] if self.config.sd_ft.mode == "lora" else trainable["unet"]
            latents = self.prior_latents(base, p["text_encoder"], k_prior)
            models["prior"] = frozen_state({"latents": latents})
        return TrainState.create(rng, models)

    def prior_latents(self, unet_params, text_params, rng: jax.Array) -> jax.Array:
        """`sd_ft.num_class_images` scaled latents sampled from `unet_params` for the prior
        prompt (DDIM, `prior_sampler_steps`, `prior_guidance`), in chunks of `batch_size`."""
        s = self.config.sd_ft
        emb = self.prompt_embeddings(text_params)
        steps, guidance = int(s.prior_sampler_steps), float(s.prior_guidance)
        chunk = min(int(self.config.batch_size), int(s.num_class_images))
        labels = jnp.full((chunk,), self.prior_label, jnp.int32)
        return sd_prior.generate_prior_latents(
            lambda x: self._ddim(unet_params, emb, x, labels, steps, guidance),
            int(s.num_class_images),
            chunk,
            (self.latent_hw, self.latent_hw, self.latent_c),
            rng,
        )

    def _loss_options(self) -> dict:
        """The diffusion-loss settings both losses (with and without the prior) train with."""
        s = self.config.sd_ft
        return dict(
            prediction=s.prediction,
            weighting=s.loss_weighting,
            snr_gamma=float(s.snr_gamma),
            label_dropout=float(s.prompt_dropout),
            num_classes=self.num_classes,
            offset_noise=float(s.offset_noise),
        )

    def loss(self, trainable, frozen: dict, latents, labels, rng):
        emb = self.prompt_embeddings(frozen["text_encoder"])
        return diffusion_loss(
            self._unet_fn(trainable, frozen, emb),
            trainable,
            self.schedule,
            latents,
            rng,
            labels=labels,
            **self._loss_options(),
        )

    def prior_loss(self, trainable, frozen: dict, latents, labels, prior, prior_labels, rng):
        """`loss` with prior preservation: the instance batch and as many prior latents through
        one U-Net call; instance + `prior_loss_weight` * prior (`sd_prior`)."""
        s = self.config.sd_ft
        emb = self.prompt_embeddings(frozen["text_encoder"])
        return sd_prior.prior_preservation_loss(
            self._unet_fn(trainable, frozen, emb),
            trainable,
            self.schedule,
            latents,
            labels,
            prior,
            prior_labels,
            rng,
            prior_weight=float(s.prior_loss_weight),
            **self._loss_options(),
        )

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        k_lat, k_loss = jax.random.split(rng)
        frozen = state["frozen"].params
        latents, labels = self._latents(state, batch, k_lat)
        model = state["unet"]
        if self.prior_label is None:
            grad_fn = jax.value_and_grad(self.loss, has_aux=True)
            (_, metrics), grads = grad_fn(model.params, frozen, latents, labels, k_loss)
        else:  # the instance draws as above; the prior's from a key of their own
            prior = sd_prior.draw_prior(
                state["prior"].params["latents"], jax.random.fold_in(rng, 2), labels.shape[0],
                self.prior_label,
            )  # fmt: skip
            grad_fn = jax.value_and_grad(self.prior_loss, has_aux=True)
            (_, metrics), grads = grad_fn(model.params, frozen, latents, labels, *prior, k_loss)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        return state.with_model("unet", model.apply_gradients(grads)), metrics

    # -- sampling ------------------------------------------------------------------------------
    def unet_params(self, state: TrainState, ema: bool = True) -> Any:
        """The U-Net parameters to sample with: fine-tuned, or base + merged LoRA."""
        m = state["unet"]
        trainable = m.ema_params if ema and m.ema_params else m.params
        if self.config.sd_ft.mode == "lora":
            base = state["frozen"].params["unet"]
            return lora_lib.merge_lora(base, trainable["lora"], self.lora_scale)
        return trainable["unet"]

    def sample(self, state: TrainState, rng: jax.Array, n: int, labels=None) -> jax.Array:
        """Engine hook: `n` images in [-1, 1] (DDIM on latents, guidance, VAE decode)."""
        smp = self.config.sampler
        if labels is None:
            labels = jnp.full((n,), self.num_classes - 1, jnp.int32)
        return self.sample_with(state, rng, labels, int(smp.steps), float(smp.guidance))

    def sample_with(self, state, rng, labels, steps: int, guidance: float) -> jax.Array:
        frozen = state["frozen"].params
        emb = self.prompt_embeddings(frozen["text_encoder"])
        unet = self.unet_params(state)
        shape = (labels.shape[0], self.latent_hw, self.latent_hw, self.latent_c)
        x = jax.random.normal(rng, shape, jnp.float32)
        z = self._ddim(unet, emb, x, labels, steps, guidance) / self.scaling
        img = self.sd.vae.apply(
            {"params": frozen["vae"]}, jnp.transpose(z, (0, 3, 1, 2)), method=self.sd.vae.decode
        ).sample
        return jnp.clip(jnp.transpose(img, (0, 2, 3, 1)), -1.0, 1.0)

    def _ddim(self, unet, emb, x, labels, steps: int, guidance: float) -> jax.Array:
        """Scaled latents from starting noise `x`: DDIM (eta = 0) with classifier-free guidance
        (`emb`: the prompt table; the empty prompt's row is the unconditional one)."""
        n = labels.shape[0]
        null = jnp.full_like(labels, self.num_classes)
        ctx = jnp.concatenate([emb[labels], emb[null]])

        def model(x, t):
            xx = jnp.transpose(jnp.concatenate([x, x]), (0, 3, 1, 2))
            tt = jnp.concatenate([t, t])
            out = self.sd.unet.apply({"params": unet}, xx, tt, ctx, train=False).sample
            cond, unc = jnp.split(jnp.transpose(out, (0, 2, 3, 1)), 2)
            return unc + guidance * (cond - unc)

        ts = jnp.asarray(ddim_timesteps(self.schedule.num_timesteps, steps))

        def body(i, x):  # DDIM, eta = 0
            t = jnp.full((n,), ts[i], jnp.int32)
            ab_prev = jnp.where(
                i + 1 < steps, self.schedule.alphas_cumprod[ts[jnp.minimum(i + 1, steps - 1)]], 1.0
            )
            x0, eps = predict_x0_and_eps(
                self.schedule, x, t, model(x, t), self.config.sd_ft.prediction
            )
            return jnp.sqrt(ab_prev) * x0 + jnp.sqrt(1.0 - ab_prev) * eps

        return jax.lax.fori_loop(0, steps, body, x)

    def heldout_loss(self, state: TrainState, images: jax.Array, labels: jax.Array, ema=True):
        """Unweighted eps-MSE of the sampling U-Net on held-out tiles at 10 fixed timesteps with
        fixed noise (the posterior mean as x0): a deterministic yardstick for fine-tuning."""
        frozen = state["frozen"].params
        mean, _ = self.encode(frozen["vae"], images)
        x0 = mean * self.scaling
        emb = self.prompt_embeddings(frozen["text_encoder"])
        unet = self.unet_params(state, ema)
        total = 0.0
        for i, t in enumerate(
            np.linspace(50, self.schedule.num_timesteps - 50, 10).astype(np.int32)
        ):
            tt = jnp.full((x0.shape[0],), t, jnp.int32)
            noise = jax.random.normal(jax.random.PRNGKey(i), x0.shape)
            a = self.schedule.sqrt_alphas_cumprod[tt][:, None, None, None]
            s = self.schedule.sqrt_one_minus_alphas_cumprod[tt][:, None, None, None]
            x_t = a * x0 + s * noise
            out = self.sd.unet.apply(
                {"params": unet}, jnp.transpose(x_t, (0, 3, 1, 2)), tt, emb[labels], train=False
            ).sample
            out = jnp.transpose(out, (0, 2, 3, 1))
            _, eps = predict_x0_and_eps(self.schedule, x_t, tt, out, self.config.sd_ft.prediction)
            total = total + jnp.mean(jnp.square(eps - noise))
        return total / 10.0
