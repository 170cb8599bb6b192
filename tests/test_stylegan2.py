"""StyleGAN2 pieces against references: the modulated conv (per-sample weights, lax), the
demodulation's unit-variance property, FIR resampling (numpy upfirdn2d), minibatch-stddev, the
ADA pipeline, and the lazy schedules / EMA ramp of the task."""

from __future__ import annotations

from pathlib import Path

from fast_jax import configure  # noqa: E402

configure()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax import lax  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.models import ada  # noqa: E402
from jaxsynth.models.stylegan2 import (  # noqa: E402
    Discriminator,
    Generator,
    ModulatedConv,
    downsample_2x,
    minibatch_stddev,
    modulated_conv,
    num_ws,
    upsample_2x,
)
from jaxsynth.tasks.stylegan2 import ema_beta, reg_fires  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def reference_modconv(x, weight, styles, demodulate):
    """One lax conv per sample with its own weights W_b = W·s_b (demodulated): the definition."""
    out = []
    for b in range(x.shape[0]):
        wb = weight * styles[b][None, None, :, None]
        if demodulate:
            wb = wb / jnp.sqrt(jnp.sum(wb**2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        out.append(
            lax.conv_general_dilated(
                x[b : b + 1], wb, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )[0]
        )
    return jnp.stack(out)


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_per_sample_weights(demodulate):
    kx, kw, ks = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, 7, 6, 5))
    w = jax.random.normal(kw, (3, 3, 5, 4))
    s = jax.random.normal(ks, (3, 5)) + 1.0
    got = modulated_conv(x, w, s, demodulate)
    np.testing.assert_allclose(got, reference_modconv(x, w, s, demodulate), rtol=1e-4, atol=1e-5)


def test_modulated_conv_module_upsamples_then_convolves():
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    wvec = jax.random.normal(jax.random.key(2), (2, 8))
    layer = ModulatedConv(5, 3, True, up=True)
    params = layer.init(jax.random.key(3), x, wvec)["params"]
    y = layer.apply({"params": params}, x, wvec)
    aff = params["affine"]
    styles = wvec @ (aff["kernel"] / np.sqrt(8)) + aff["bias"]
    ref = reference_modconv(upsample_2x(x), params["kernel"] / np.sqrt(27), styles, True)
    assert y.shape == (2, 8, 8, 5)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_demodulation_keeps_unit_std_for_unit_inputs():
    kx, kw, ks = jax.random.split(jax.random.key(4), 3)
    x = jax.random.normal(kx, (4, 40, 40, 64))
    w = jax.random.normal(kw, (3, 3, 64, 32))
    s = jnp.exp(jax.random.normal(ks, (4, 64)))  # styles of very different scales
    inner = (slice(None), slice(1, -1), slice(1, -1))  # SAME borders see zeros
    y = modulated_conv(x, w, s, True)[inner]
    std = np.asarray(y.std(axis=(1, 2)))  # per sample and output channel
    assert np.all(np.abs(std - 1.0) < 0.1), std.min()
    y_raw = modulated_conv(x, w, s, False)[inner]
    assert np.all(np.asarray(y_raw.std(axis=(1, 2))) > 5.0)  # without it, the styles' scale


def numpy_upfirdn2d(x, up, down):
    """upfirdn2d with f = [1,3,3,1] (outer product, normalised, gain up²) and StyleGAN2's padding:
    zero-insert, pad, correlate, keep every `down`-th sample. x: (B,H,W,C) float64."""
    f1 = np.array([1.0, 3.0, 3.0, 1.0])
    f = np.outer(f1, f1)
    f = f / f.sum() * (up * up)
    b, h, w, c = x.shape
    u = np.zeros((b, h * up, w * up, c))
    u[:, ::up, ::up] = x
    p0, p1 = (2, 1) if up == 2 else (1, 1)
    u = np.pad(u, ((0, 0), (p0, p1), (p0, p1), (0, 0)))
    oh, ow = u.shape[1] - 3, u.shape[2] - 3
    out = np.zeros((b, oh, ow, c))
    for i in range(4):
        for j in range(4):
            out += f[i, j] * u[:, i : i + oh, j : j + ow]
    return out[:, ::down, ::down]


def test_fir_resampling_matches_numpy_upfirdn2d():
    x = np.asarray(jax.random.normal(jax.random.key(5), (2, 6, 8, 3)), np.float64)
    np.testing.assert_allclose(upsample_2x(jnp.asarray(x)), numpy_upfirdn2d(x, 2, 1), atol=1e-5)
    np.testing.assert_allclose(downsample_2x(jnp.asarray(x)), numpy_upfirdn2d(x, 1, 2), atol=1e-5)


def test_minibatch_stddev_matches_numpy():
    x = np.asarray(jax.random.normal(jax.random.key(6), (8, 3, 3, 4)), np.float64)
    got = np.asarray(minibatch_stddev(jnp.asarray(x), 4))
    groups = x.reshape(4, 2, 3, 3, 4)  # sample i is in group slot i % 2
    stat = np.sqrt(groups.var(axis=0) + 1e-8).mean(axis=(1, 2, 3))  # (2,)
    assert got.shape == (8, 3, 3, 5)
    np.testing.assert_allclose(got[..., :4], x, atol=1e-6)
    for i in range(8):
        np.testing.assert_allclose(got[i, :, :, 4], stat[i % 2], rtol=1e-5)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_generator_and_discriminator_shapes(size):
    g = Generator(
        image_size=size,
        z_dim=8,
        w_dim=8,
        num_classes=2,
        mapping_layers=2,
        channel_base=256,
        channel_max=16,
    )
    d = Discriminator(
        image_size=size,
        num_classes=2,
        channel_base=256,
        channel_max=16,
        mapping_layers=2,
        cmap_dim=8,
    )
    z, lb = jnp.zeros((4, 8)), jnp.zeros((4,), jnp.int32)
    gv = jax.eval_shape(
        lambda: g.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, z, lb)
    )
    img = jax.eval_shape(lambda v: g.apply(v, z, lb, rngs={"noise": jax.random.key(1)}), gv)
    assert img.shape == (4, size, size, 3)
    assert num_ws(size) == 2 * int(np.log2(size)) - 2
    dv = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros(img.shape), lb))
    assert jax.eval_shape(lambda v: d.apply(v, jnp.zeros(img.shape), lb), dv).shape == (4,)


@pytest.mark.parametrize("size", [16, 48, 512])
def test_bad_resolution_is_rejected(size):
    with pytest.raises(ValueError, match="power of two from 32 to 256"):
        num_ws(size)


# ----------------------------------------------------------------------------- ADA
def test_ada_is_identity_at_p0_and_changes_images_at_p1():
    x = jax.random.uniform(jax.random.key(7), (6, 16, 16, 3)) * 2 - 1
    same = ada.augment(x, jax.random.key(8), jnp.asarray(0.0), ("b", "g", "c"))
    np.testing.assert_allclose(same, x, atol=1e-5)
    moved = np.asarray(ada.augment(x, jax.random.key(8), jnp.asarray(1.0), ("b", "g", "c")))
    assert np.all(np.abs(moved - np.asarray(x)).mean(axis=(1, 2, 3)) > 1e-2)
    grad = jax.grad(lambda v: ada.augment(v, jax.random.key(9), 1.0, ("b", "g", "c")).sum())(x)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_ada_warp_rot90_flip_and_integer_shift_are_exact():
    x = jax.random.normal(jax.random.key(10), (1, 8, 8, 2))
    b = jnp.ones((1,))
    rot = ada._rotate2d(-0.5 * np.pi * b)
    got = np.asarray(ada.warp(x, rot))[0]
    assert any(
        np.allclose(got, np.rot90(np.asarray(x[0]), k, axes=(0, 1)), atol=1e-5) for k in (1, 3)
    )
    flip = np.asarray(ada.warp(x, ada._scale2d(-b, b)))[0]
    np.testing.assert_allclose(flip, np.asarray(x[0])[:, ::-1], atol=1e-5)
    shift = np.asarray(ada.warp(x, ada._translate2d(-2 * b, 0 * b)))[0]  # content moves right 2
    np.testing.assert_allclose(shift[:, 2:], np.asarray(x[0])[:, :-2], atol=1e-5)
    np.testing.assert_allclose(shift[:, :2], np.asarray(x[0])[:, 2:0:-1], atol=1e-5)  # reflect


def test_colour_hue_rotation_keeps_grey_pixels():
    """Grey (r = g = b) lies on the luma axis: hue rotation and saturation leave it alone."""
    m = ada._rotate_about(jnp.ones(3) / np.sqrt(3), jnp.asarray([0.7, -2.0]))
    grey = jnp.asarray([0.3, 0.3, 0.3, 1.0])
    np.testing.assert_allclose(m @ grey, jnp.broadcast_to(grey, (2, 4)), atol=1e-6)


def test_ada_controller_moves_p_by_the_paper_rate():
    p = jnp.asarray(0.5)
    up = ada.ada_adjust(p, jnp.asarray(32.0), jnp.asarray(32.0), 0.6, 500_000.0)
    down = ada.ada_adjust(p, jnp.asarray(-8.0), jnp.asarray(32.0), 0.6, 500_000.0)
    assert float(up) == pytest.approx(0.5 + 32 / 500_000)
    assert float(down) == pytest.approx(0.5 - 32 / 500_000)
    assert (
        float(ada.ada_adjust(jnp.asarray(0.0), jnp.asarray(-1.0), jnp.asarray(4.0), 0.6, 1.0)) == 0
    )


def test_bad_augment_spec_is_rejected():
    with pytest.raises(ValueError, match="ada.augment"):
        ada.parse_groups("bgx")


# ----------------------------------------------------------------------------- schedules
def test_lazy_schedules_fire_at_the_right_steps():
    steps = jnp.arange(70)
    r1 = [int(s) for s in steps if reg_fires(s, 16)]
    pl = [int(s) for s in steps if reg_fires(s, 4)]
    assert r1 == [0, 16, 32, 48, 64]
    assert pl == list(range(0, 70, 4))
    assert not any(bool(reg_fires(s, 0)) for s in steps)


def test_ema_beta_ramp_matches_the_official_formula():
    for step in (0, 1, 10, 1000, 100_000):
        nimg = step * 32
        ema_nimg = min(10_000.0, nimg * 0.05)
        want = 0.5 ** (32 / max(ema_nimg, 1e-8))
        assert float(ema_beta(jnp.asarray(step), 32, 10.0, 0.05)) == pytest.approx(want, rel=1e-5)
    assert float(ema_beta(jnp.asarray(0), 64, 20.0, 0.0)) == pytest.approx(0.5 ** (64 / 20_000))


def test_config_variants_build():
    for arg in ("smoke", "study32", "study64", "paper", None):
        c = load_config(str(REPO / "configs" / "stylegan2.py") + (f":{arg}" if arg else ""))
        assert c.task == "jaxsynth.tasks.stylegan2:make_task"
    paper = load_config(str(REPO / "configs" / "stylegan2.py") + ":paper")
    assert (paper.image_size, paper.batch_size, paper.stylegan.r1_gamma) == (256, 64, 1.0)
    assert paper.model.g_channel_base == 16384 and paper.model.mbstd_group == 8


@pytest.mark.parametrize(
    "override, field", [("image_size=48", "image_size=48"), ("ada.augment=bgx", "ada.augment")]
)
def test_bad_config_values_are_one_line_user_errors(override, field):
    from jaxsynth.errors import UserError
    from jaxsynth.train.task import build_task

    config = load_config(
        str(REPO / "configs" / "stylegan2.py") + ":smoke", [f"--config.{override}"]
    )
    with pytest.raises(UserError, match=field):
        build_task(config)


def test_conditional_generator_and_discriminator_depend_on_the_label():
    g = Generator(
        image_size=32,
        z_dim=8,
        w_dim=8,
        num_classes=2,
        mapping_layers=2,
        channel_base=128,
        channel_max=8,
    )
    d = Discriminator(
        image_size=32, num_classes=2, channel_base=128, channel_max=8, mapping_layers=2, cmap_dim=8
    )
    z = jnp.ones((2, 8))
    lb0, lb1 = jnp.zeros((2,), jnp.int32), jnp.ones((2,), jnp.int32)
    rngs = {"params": jax.random.key(0), "noise": jax.random.key(1)}
    gv = g.init(rngs, z, lb0)
    x0 = g.apply(gv, z, lb0, rngs={"noise": jax.random.key(2)})
    x1 = g.apply(gv, z, lb1, rngs={"noise": jax.random.key(2)})
    assert float(jnp.abs(x0 - x1).mean()) > 1e-4
    dv = d.init(jax.random.key(3), x0, lb0)
    assert float(jnp.abs(d.apply(dv, x0, lb0) - d.apply(dv, x0, lb1)).mean()) > 1e-6


def test_study_config_adds_a_buildable_stylegan2_generator():
    from jaxsynth.study.generators import generator_config
    from jaxsynth.train.task import build_task

    for arg in ("", ":smoke"):
        study = load_config(str(REPO / "configs" / "stylegan2_study.py") + arg)
        assert study.generators == ("stylegan2",)
        cfg = generator_config(study, "stylegan2")
        assert cfg.image_size == 32 and cfg.data.train_classes == ("tumour",)
        assert build_task(cfg).name == "stylegan2"
