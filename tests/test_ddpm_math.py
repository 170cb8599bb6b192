"""Diffusion math against closed forms: schedules, q(x_t|x_0), samplers with an exact denoiser,
classifier-free guidance, the re-segmenter and mask IoU. No network training here (fast)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import jaccard_score

from jaxsynth.diffusion.samplers import (
    SamplerOptions,
    ddim_timesteps,
    guided_output,
    sample_loop,
)
from jaxsynth.diffusion.schedules import (
    make_schedule,
    predict_x0_and_eps,
    q_mean_variance,
    q_sample,
)
from jaxsynth.diffusion.segmentation import mask_guided_iou, mask_iou, segment_nuclei
from jaxsynth.models.unet import num_groups


def test_linear_schedule_and_forward_process_match_numpy_closed_form():
    T = 100
    sched = make_schedule("linear", T)
    betas = np.linspace(1e-4 * 10, 0.02 * 10, T)  # Ho et al. endpoints rescaled by 1000/T
    abar = np.cumprod(1.0 - betas)
    np.testing.assert_allclose(np.asarray(sched.alphas_cumprod), abar, rtol=1e-5)

    x0 = jax.random.uniform(jax.random.key(1), (5, 4, 4, 3), minval=-1, maxval=1)
    t = jnp.array([0, 10, 50, 90, 99])
    noise = jax.random.normal(jax.random.key(2), x0.shape)
    xt = q_sample(sched, x0, t, noise)
    a = np.sqrt(abar[np.asarray(t)])[:, None, None, None]
    expected = a * np.asarray(x0) + np.sqrt(1 - a**2) * np.asarray(noise)
    np.testing.assert_allclose(np.asarray(xt), expected, rtol=1e-5, atol=1e-6)

    mean, var = q_mean_variance(sched, x0, t)
    np.testing.assert_allclose(np.asarray(mean), a * np.asarray(x0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(var), 1 - abar[np.asarray(t)], rtol=1e-5)

    # Monte Carlo: many draws of x_t for one x_0 have the closed-form mean and variance.
    draws = 20000
    x0_one = jnp.full((draws, 1, 1, 1), 0.7)
    t_one = jnp.full((draws,), 30)
    samples = q_sample(sched, x0_one, t_one, jax.random.normal(jax.random.key(3), x0_one.shape))
    samples = np.asarray(samples).ravel()
    assert abs(samples.mean() - math.sqrt(abar[30]) * 0.7) < 4 * math.sqrt((1 - abar[30]) / draws)
    assert abs(samples.var() / (1 - abar[30]) - 1) < 0.05


def test_cosine_schedule_matches_nichol_dhariwal_formula():
    T, s = 1000, 0.008
    sched = make_schedule("cosine", T)
    t = np.arange(1, T + 1)
    f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    f0 = np.cos(s / (1 + s) * np.pi / 2) ** 2
    abar = f / f0  # alpha_bar at t=1..T (our index 0..T-1)
    betas = 1 - abar / np.concatenate([[1.0], abar[:-1]])
    unclipped = betas < 0.999
    assert unclipped.sum() >= T - 2  # only the very end hits the 0.999 clip
    np.testing.assert_allclose(
        np.asarray(sched.alphas_cumprod)[unclipped], abar[unclipped], rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(np.asarray(sched.betas)[unclipped], betas[unclipped], rtol=1e-4)
    assert float(sched.betas.max()) <= 0.999 + 1e-6


def test_v_prediction_round_trip():
    sched = make_schedule("cosine", 50)
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jax.random.uniform(k1, (4, 2, 2, 3), minval=-1, maxval=1)
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([0, 7, 25, 49])
    xt = q_sample(sched, x0, t, eps)
    a = sched.sqrt_alphas_cumprod[t][:, None, None, None]
    s = sched.sqrt_one_minus_alphas_cumprod[t][:, None, None, None]
    for pred, out in (("eps", eps), ("v", a * eps - s * x0)):
        x0_hat, eps_hat = predict_x0_and_eps(sched, xt, t, out, pred)
        np.testing.assert_allclose(np.asarray(eps_hat), np.asarray(eps), atol=2e-4)
        # x0 from eps is ill-conditioned at t=T-1 (divides by sqrt(abar)): check t < 49
        np.testing.assert_allclose(np.asarray(x0_hat[:3]), np.asarray(x0[:3]), atol=2e-3)


def test_x0_from_v_is_well_conditioned_where_x0_from_eps_amplifies_errors():
    """Why v is the default prediction: an output error d moves x0_hat by d * sqrt(1-abar) with v
    (at most d) but by d * sqrt(1-abar)/sqrt(abar) with eps, which is ~2e4 at the cosine
    schedule's last step - a tiny eps error there becomes a saturated random colour."""
    sched = make_schedule("cosine", 1000)
    xt = jax.random.normal(jax.random.key(0), (3, 4, 4, 3))
    t = jnp.array([999, 950, 500])
    out = jax.random.normal(jax.random.key(1), xt.shape)
    d = 1e-3
    ac = np.asarray(sched.alphas_cumprod, np.float64)[np.asarray(t)]
    for pred, gain in (("v", np.sqrt(1 - ac)), ("eps", np.sqrt((1 - ac) / ac))):
        x0_a, _ = predict_x0_and_eps(sched, xt, t, out, pred)
        x0_b, _ = predict_x0_and_eps(sched, xt, t, out + d, pred)
        moved = np.abs(np.asarray(x0_b - x0_a)).mean(axis=(1, 2, 3))
        np.testing.assert_allclose(moved, d * gain, rtol=2e-2)
    assert np.sqrt((1 - ac[0]) / ac[0]) > 1e4  # eps at t=T-1: error x 20,000


def gaussian_denoiser(sched, mu: float, std: float):
    """The exact E[eps | x_t] when every pixel of x_0 is N(mu, std^2) independently."""

    def apply_fn(variables, x, t, labels, cond, train, rngs):
        a = sched.sqrt_alphas_cumprod[t][:, None, None, None]
        s = sched.sqrt_one_minus_alphas_cumprod[t][:, None, None, None]
        return s * (x - a * mu) / (a**2 * std**2 + s**2)

    return apply_fn


def linear_chain_moments(sched, options, mu: float, std: float) -> tuple[float, float]:
    """Numpy reference: with the (linear) Gaussian denoiser and no clipping, every sampler step
    is x_prev = A x_t + b + sigma z, so the mean and variance of x_0 propagate in closed form."""
    ac = np.cumprod(1.0 - np.asarray(sched.betas, np.float64))
    T = len(ac)
    if options.sampler == "ddpm":
        ts = np.arange(T - 1, -1, -1)
    else:
        ts = np.round(np.linspace(0, T - 1, options.steps)).astype(int)[::-1]
    m, v = 0.0, 1.0
    for i, t in enumerate(ts):
        ab = ac[t]
        ab_prev = ac[ts[i + 1]] if i + 1 < len(ts) else 1.0
        a, s = np.sqrt(ab), np.sqrt(1 - ab)
        k = s / (ab * std**2 + s**2)  # eps_hat = k (x - a mu)
        x0_a, x0_b = (1 - s * k) / a, s * k * mu  # x0_hat = x0_a x + x0_b
        eps_a, eps_b = k, -k * a * mu
        if options.sampler == "ddpm":
            beta = 1 - ab / ab_prev
            c1 = np.sqrt(ab_prev) * beta / (1 - ab)
            c2 = np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
            A, b, var = c1 * x0_a + c2, c1 * x0_b, beta * (1 - ab_prev) / (1 - ab)
        else:
            var = options.eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
            d = np.sqrt(max(1 - ab_prev - var, 0.0))
            A = np.sqrt(ab_prev) * x0_a + d * eps_a
            b = np.sqrt(ab_prev) * x0_b + d * eps_b
        m, v = A * m + b, A**2 * v + var
    return m, float(np.sqrt(v))


@pytest.mark.parametrize(
    "options",
    [
        SamplerOptions("ddpm", clip_denoised=False),
        SamplerOptions("ddim", steps=50, eta=0.0, clip_denoised=False),
        SamplerOptions("ddim", steps=50, eta=1.0, clip_denoised=False),
    ],
    ids=["ddpm", "ddim_eta0", "ddim_eta1"],
)
def test_samplers_with_exact_denoiser_match_closed_form_moments(options):
    """With the exact posterior-mean denoiser for N(mu, std^2) data, the samples' mean and std
    must match the closed-form propagation through the chain (numpy), and be close to the data
    distribution itself, up to the known under-dispersion of short chains (the last step returns
    E[x_0 | x_t] at a small t; DDPM's beta~ is a lower bound): 6% (ddpm) to 20% (ddim eta=1)."""
    sched = make_schedule("linear", 200)
    mu, std = 0.3, 0.2
    out = sample_loop(
        gaussian_denoiser(sched, mu, std), None, sched, jax.random.key(0), (64, 8, 8, 1), options
    )
    out = np.asarray(out, np.float64)
    ref_mean, ref_std = linear_chain_moments(sched, options, mu, std)
    assert abs(out.mean() - ref_mean) < 4 * ref_std / np.sqrt(out.size)
    assert abs(out.std() / ref_std - 1) < 0.04  # 4096 draws: ~1.1% standard error
    assert abs(ref_mean - mu) < 0.01 and abs(ref_std / std - 1) < 0.25


def test_ddim_eta1_over_all_steps_equals_ddpm_ancestral():
    """Song et al.: DDIM with eta=1 and every timestep is DDPM ancestral sampling with
    variance beta~_t. Same seed => same noise => the same chain (here with clipping active)."""
    sched = make_schedule("cosine", 60)
    fn = gaussian_denoiser(sched, 0.6, 0.5)  # mass outside [-1, 1]: clipping matters
    ddpm = sample_loop(fn, None, sched, jax.random.key(4), (8, 4, 4, 3), SamplerOptions("ddpm"))
    ddim = sample_loop(
        fn, None, sched, jax.random.key(4), (8, 4, 4, 3), SamplerOptions("ddim", 60, eta=1.0)
    )
    np.testing.assert_allclose(np.asarray(ddim), np.asarray(ddpm), atol=1e-4)
    ddim0 = sample_loop(
        fn, None, sched, jax.random.key(4), (8, 4, 4, 3), SamplerOptions("ddim", 60, eta=0.0)
    )
    assert float(jnp.abs(ddim0 - ddpm).mean()) > 1e-2  # eta matters: the check is not vacuous


def test_ddim_timesteps():
    assert list(ddim_timesteps(10, 10)) == list(range(9, -1, -1))
    ts = ddim_timesteps(1000, 50)
    assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == 50 and np.all(np.diff(ts) < 0)
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


def test_classifier_free_guidance_combines_label_and_null_outputs():
    calls = []

    def apply_fn(variables, x, t, labels, cond, train, rngs):
        calls.append(x.shape[0])
        return x * 0 + labels[:, None, None, None].astype(jnp.float32) ** 2 + cond

    x = jnp.zeros((3, 2, 2, 1))
    labels = jnp.array([0, 1, 2])
    cond = jnp.ones((3, 2, 2, 1))
    out = guided_output(apply_fn, None, x, jnp.zeros(3, jnp.int32), labels, cond, 2.5, 4)
    label_out = np.broadcast_to(np.asarray(labels)[:, None, None, None] ** 2 + 1.0, x.shape)
    null_out = 16.0 + 1.0  # null label = num_classes = 4
    np.testing.assert_allclose(np.asarray(out), null_out + 2.5 * (label_out - null_out))
    assert calls == [6]  # one doubled batch
    plain = guided_output(apply_fn, None, x, jnp.zeros(3, jnp.int32), labels, cond, 1.0, 4)
    np.testing.assert_allclose(np.asarray(plain), label_out)
    assert calls == [6, 3]


def test_group_count_is_valid_for_tiny_channels():
    for ch in (1, 3, 4, 6, 8, 12, 24, 48, 64, 96, 128, 320):
        g = num_groups(ch)
        assert ch % g == 0 and 1 <= g <= 32 and (ch // g >= 4 or g == 1)
    assert num_groups(128) == 32 and num_groups(64) == 16 and num_groups(8) == 2
    assert num_groups(24) == 6 and num_groups(3) == 1


def test_mask_iou_matches_sklearn_jaccard():
    rng = np.random.default_rng(0)
    pred = rng.random((6, 9, 9)) > 0.6
    target = rng.random((6, 9, 9)) > 0.5
    ours = mask_iou(pred, target)
    ref = [jaccard_score(t.ravel(), p.ravel()) for p, t in zip(pred, target, strict=True)]
    np.testing.assert_allclose(ours, ref)
    empty = np.zeros((1, 4, 4), bool)
    assert mask_iou(empty, empty)[0] == 1.0  # convention: nothing to find, nothing found
    assert mask_iou(empty, ~empty)[0] == 0.0


def he_image_from_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An H&E-like uint8 image: pink eosin background, purple haematoxylin nuclei (+ noise)."""
    background = np.array([235.0, 170.0, 205.0])
    nucleus = np.array([95.0, 60.0, 150.0])
    img = np.where(mask[..., None], nucleus, background) + rng.normal(0, 6, mask.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_resegmentation_recovers_nuclei_of_a_synthetic_he_image():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:32, :32]
    masks = []
    for _ in range(4):
        m = np.zeros((32, 32), bool)
        for cy, cx, r in rng.uniform([4, 4, 2], [28, 28, 5], (5, 3)):
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        masks.append(m)
    masks = np.stack(masks)
    images = np.stack([he_image_from_mask(m, rng) for m in masks])
    assert mask_iou(segment_nuclei(images[0])[None], masks[:1])[0] > 0.9
    scores = mask_guided_iou(images, masks)
    assert scores["iou"] > 0.9 and scores["iou_shuffled"] < 0.5
    # images in [-1, 1] (the samplers' range) give the same masks as uint8
    as_float = images.astype(np.float32) / 127.5 - 1.0
    np.testing.assert_array_equal(segment_nuclei(as_float[1]), segment_nuclei(images[1]))


def test_resegmentation_on_phantom_tiles_beats_shuffled_masks():
    from jaxsynth.data.phantom import PhantomSource

    images, masks, _ = PhantomSource(num_per_class=4, image_size=64, seed=3).render_batch(range(8))
    scores = mask_guided_iou(images, masks)
    # The phantom's nuclei are haematoxylin-dense: the deconvolution segmenter should find them.
    assert scores["iou"] > scores["iou_shuffled"] + 0.1


def test_load_masks_binarises_resizes_and_names_bad_files(tmp_path):
    from PIL import Image

    from jaxsynth.diffusion.masks import load_masks
    from jaxsynth.errors import UserError

    m = np.zeros((32, 32), np.uint8)
    m[8:16, 8:24] = 255
    Image.fromarray(m).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", (m > 0)[:16, :16])
    masks, names = load_masks(tmp_path, 16)
    assert names == ["a.png", "b.npy"] and masks.shape == (2, 16, 16, 1)
    assert set(np.unique(masks)) == {0.0, 1.0}
    np.testing.assert_array_equal(masks[0, ..., 0], m[::2, ::2] > 0)  # nearest: stays binary
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="c.png"):
        load_masks(tmp_path, 16)


def test_label_dropout_replaces_labels_by_the_null_label_at_rate_p():
    from jaxsynth.diffusion.losses import drop_labels

    labels = jnp.arange(20000) % 3
    out = np.asarray(drop_labels(labels, jax.random.key(0), 0.3, null_label=3))
    dropped = out == 3
    assert abs(dropped.mean() - 0.3) < 0.02
    np.testing.assert_array_equal(out[~dropped], np.asarray(labels)[~dropped])
    np.testing.assert_array_equal(
        np.asarray(drop_labels(labels, jax.random.key(0), 0.0, 3)), labels
    )
