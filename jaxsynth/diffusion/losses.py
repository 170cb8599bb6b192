"""The denoising loss (Ho et al. 2020 "simple" loss) with optional v-target and SNR weighting.

WHY a pure function of `apply_fn`: the training task, the tests and the benchmark all call the
same loss; the engine jits and shards it. Label dropout for classifier-free guidance (Ho &
Salimans 2022) happens here: a fraction of labels is replaced by the null label `num_classes`, so
one network learns both p(x | y) and p(x).

Weightings (per example, on the mean squared error):
  "none"    - the simple loss, uniform over t (paper 002 / Ho et al.);
  "min_snr" - Min-SNR-gamma (Hang et al. 2023): min(SNR_t, gamma) / SNR_t for eps-prediction and
              min(SNR_t, gamma) / (SNR_t + 1) for v-prediction; speeds up convergence.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxsynth.diffusion.schedules import Schedule, q_sample

WEIGHTINGS = ("none", "min_snr")

# apply_fn(params, x_t, t, labels, cond, train, rngs) -> model output, same shape as x_t
ApplyFn = Callable[..., jax.Array]


def drop_labels(labels: jax.Array, rng: jax.Array, p: float, null_label: int) -> jax.Array:
    """Replace each label by `null_label` with probability `p` (classifier-free guidance)."""
    if p <= 0.0:
        return labels
    drop = jax.random.bernoulli(rng, p, labels.shape)
    return jnp.where(drop, null_label, labels)


def loss_weights(schedule: Schedule, t: jax.Array, weighting: str, prediction: str, gamma: float):
    if weighting == "none":
        return jnp.ones(t.shape, jnp.float32)
    if weighting == "min_snr":
        ac = schedule.alphas_cumprod[t]
        snr = ac / (1.0 - ac)
        clipped = jnp.minimum(snr, gamma)
        return clipped / snr if prediction == "eps" else clipped / (snr + 1.0)
    raise ValueError(f"unknown loss weighting '{weighting}' (expected one of {WEIGHTINGS})")


def noised(
    schedule: Schedule,
    x0: jax.Array,
    rng: jax.Array,
    labels: jax.Array | None = None,
    label_dropout: float = 0.0,
    num_classes: int = 0,
    offset_noise: float = 0.0,
):
    """(x_t, t, noise, labels after dropout): the random draws of one training step from `rng`
    (split in 4: timesteps, noise, label dropout, and the network's dropout, left to the
    caller). One home for them, so a loss built from several batches (SD prior preservation)
    draws exactly what `diffusion_loss` draws for each."""
    t_rng, noise_rng, drop_rng, _ = jax.random.split(rng, 4)
    b = x0.shape[0]
    t = jax.random.randint(t_rng, (b,), 0, schedule.num_timesteps)
    noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
    if offset_noise > 0.0:
        shift = jax.random.normal(jax.random.fold_in(noise_rng, 1), (b, 1, 1, x0.shape[-1]))
        noise = noise + offset_noise * shift.astype(x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    if labels is not None and num_classes > 0:
        labels = drop_labels(labels, drop_rng, label_dropout, num_classes)
    return x_t, t, noise, labels


def prediction_target(schedule: Schedule, prediction: str, x0, t, noise) -> jax.Array:
    """What the network is trained to output: the noise (eps) or v = √ᾱ·ε − √(1−ᾱ)·x0."""
    if prediction == "eps":
        return noise
    if prediction == "v":
        a = schedule.sqrt_alphas_cumprod[t][:, None, None, None]
        s = schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None, None]
        return a * noise - s * x0
    raise ValueError(f"unknown prediction '{prediction}' (expected 'eps' or 'v')")


def diffusion_loss(
    apply_fn: ApplyFn,
    params,
    schedule: Schedule,
    x0: jax.Array,
    rng: jax.Array,
    *,
    labels: jax.Array | None = None,
    cond: jax.Array | None = None,
    prediction: str = "eps",
    weighting: str = "none",
    snr_gamma: float = 5.0,
    label_dropout: float = 0.0,
    num_classes: int = 0,
    offset_noise: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean weighted MSE between the network output and its target, over a global batch.

    `x0` is (B, H, W, C) in [-1, 1]; `labels` int (B,) or None; `cond` (B, H, W, k) or None.
    `offset_noise` adds a per-example, per-channel constant ~ N(0, offset_noise^2) to the noise
    (Guttenberg 2023), so the model also learns to shift an image's mean brightness/colour.
    Returns (loss, metrics) where metrics also holds the unweighted MSE.
    """
    x_t, t, noise, labels = noised(
        schedule, x0, rng, labels, label_dropout, num_classes, offset_noise
    )
    dropout_rng = jax.random.split(rng, 4)[3]
    out = apply_fn(params, x_t, t, labels, cond, True, {"dropout": dropout_rng})
    target = prediction_target(schedule, prediction, x0, t, noise)
    per_example = jnp.mean(jnp.square(out.astype(jnp.float32) - target), axis=(1, 2, 3))
    weights = loss_weights(schedule, t, weighting, prediction, snr_gamma)
    loss = jnp.mean(weights * per_example)
    return loss, {"loss": loss, "mse": jnp.mean(per_example)}
