"""Noise schedules and the closed-form forward process q(x_t | x_0).

WHY our own math: diffusers' `FlaxDDPMScheduler.step` is broken on jax 0.10 (STACK.md), and the
samplers need the schedule as plain arrays they can index inside one compiled `lax.fori_loop`.
Every derived quantity is computed once in float64 numpy (products of 1000 numbers lose
precision in float32) and stored as float32 arrays in a `Schedule` pytree.

Notation (Ho et al. 2020): alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s,
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I). Index t runs 0..T-1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine")


def linear_betas(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
    """Ho et al.'s linear schedule; the endpoints are rescaled by 1000/T (Nichol & Dhariwal) so
    that a schedule with fewer steps destroys the signal as completely as T=1000 does."""
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)


def cosine_alpha_bar(t: np.ndarray, num_timesteps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal (2021) eq. 17: alpha_bar(t) = f(t)/f(0),
    f(t) = cos^2((t/T + s)/(1 + s) pi/2)."""
    f = lambda u: np.cos((u / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2
    return f(np.asarray(t, np.float64)) / f(0.0)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = 1 - alpha_bar(t+1)/alpha_bar(t), clipped at `max_beta` (eq. 17 and below)."""
    steps = np.arange(num_timesteps + 1, dtype=np.float64)
    ab = cosine_alpha_bar(steps, num_timesteps, s)
    return np.minimum(1.0 - ab[1:] / ab[:-1], max_beta)


class Schedule(NamedTuple):
    """All per-timestep constants, float32 arrays of shape (T,). A pytree: pass it into jit."""

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    posterior_variance: jax.Array  # beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
    posterior_mean_coef1: jax.Array  # coefficient of x_0 in the mean of q(x_{t-1} | x_t, x_0)
    posterior_mean_coef2: jax.Array  # coefficient of x_t

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])


def schedule_from_betas(betas: np.ndarray) -> Schedule:
    betas = np.asarray(betas, np.float64)
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.concatenate([[1.0], ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return Schedule(
        betas=f32(betas),
        alphas_cumprod=f32(ac),
        alphas_cumprod_prev=f32(ac_prev),
        sqrt_alphas_cumprod=f32(np.sqrt(ac)),
        sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - ac)),
        posterior_variance=f32(post_var),
        posterior_mean_coef1=f32(betas * np.sqrt(ac_prev) / (1.0 - ac)),
        posterior_mean_coef2=f32((1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)),
    )


def make_schedule(kind: str, num_timesteps: int) -> Schedule:
    """`kind` in {"linear", "cosine"}."""
    if kind == "linear":
        return schedule_from_betas(linear_betas(num_timesteps))
    if kind == "cosine":
        return schedule_from_betas(cosine_betas(num_timesteps))
    raise ValueError(f"unknown beta schedule '{kind}' (expected one of {SCHEDULES})")


def _bcast(values: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """values[t] reshaped to (B, 1, 1, ...) for broadcasting against a (B, ...) tensor."""
    return values[t].reshape((-1,) + (1,) * (ndim - 1))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Draw x_t ~ q(x_t | x_0) with the given standard-normal `noise`."""
    return (
        _bcast(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0
        + _bcast(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise
    )


def q_mean_variance(schedule: Schedule, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and (per-example) variance of q(x_t | x_0)."""
    mean = _bcast(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0
    var = jnp.square(schedule.sqrt_one_minus_alphas_cumprod[t])  # no 1 - abar cancellation
    return mean, var


def predict_x0_and_eps(
    schedule: Schedule, x_t: jax.Array, t: jax.Array, model_out: jax.Array, prediction: str
) -> tuple[jax.Array, jax.Array]:
    """(x0_hat, eps_hat) from the network output, for "eps" or "v" prediction
    (v = sqrt(abar) eps - sqrt(1 - abar) x0, Salimans & Ho 2022)."""
    a = _bcast(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = _bcast(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    if prediction == "eps":
        return (x_t - s * model_out) / a, model_out
    if prediction == "v":
        return a * x_t - s * model_out, a * model_out + s * x_t
    raise ValueError(f"unknown prediction '{prediction}' (expected 'eps' or 'v')")
