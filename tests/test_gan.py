"""GAN pieces: the fast transposed conv, model shapes, DiffAugment, configs, and each GAN
training a few steps through the engine with finite losses."""

from __future__ import annotations

import json
from pathlib import Path

from fast_jax import configure  # noqa: E402

configure()  # before jax is imported

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.models.gan import Discriminator, Generator, num_stages  # noqa: E402
from jaxsynth.models.layers import IMPLS, ConvTranspose4x4S2, conv_transpose_4x4_s2  # noqa: E402
from jaxsynth.tasks.gan import diff_augment, parse_policy  # noqa: E402
from jaxsynth.train.loop import TrainData, train  # noqa: E402
from jaxsynth.train.task import build_task  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def numpy_conv_transpose(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Scatter definition: input pixel i adds x[i]·W[k] to output o = 2i + 2 - k (per axis),
    i.e. correlation of the 2×-dilated, 2-padded input with W, cropped to 2H × 2W."""
    b, h, wd, _ = x.shape
    out = np.zeros((b, 2 * h, 2 * wd, w.shape[3]), np.float64)
    for i in range(h):
        for j in range(wd):
            for ky in range(4):
                for kx in range(4):
                    oy, ox = 2 * i + 2 - ky, 2 * j + 2 - kx
                    if 0 <= oy < 2 * h and 0 <= ox < 2 * wd:
                        out[:, oy, ox] += x[:, i, j] @ w[ky, kx]
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_conv_transpose_matches_numpy_lax_and_flax(impl):
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (2, 5, 6, 3))
    w = jax.random.normal(kw, (4, 4, 3, 7))
    y = conv_transpose_4x4_s2(x, w, impl)
    np.testing.assert_allclose(y, numpy_conv_transpose(np.asarray(x), np.asarray(w)), atol=2e-5)
    flax_layer = nn.ConvTranspose(7, (4, 4), (2, 2), padding=((2, 2), (2, 2)), use_bias=False)
    y_flax = flax_layer.apply({"params": {"kernel": w}}, x)
    np.testing.assert_allclose(y, y_flax, atol=2e-5)
    # gradients w.r.t. input and kernel equal those of lax.conv_transpose
    dy = jax.random.normal(kg, y.shape)

    def loss(fn):
        return lambda x_, w_: jnp.sum(fn(x_, w_) * dy)

    ref = jax.grad(loss(lambda a, b: conv_transpose_4x4_s2(a, b, "lax")), (0, 1))(x, w)
    got = jax.grad(loss(lambda a, b: conv_transpose_4x4_s2(a, b, impl)), (0, 1))(x, w)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=5e-5, rtol=1e-5)


def test_strided_conv_im2col_equals_lax_to_second_order():
    """The im2col 4x4/2 conv (the WGAN-GP penalty's) equals lax's conv and the padded numpy
    correlation, and so do its input-gradient and the penalty's gradient-of-gradient."""
    from jaxsynth.models.layers import conv_4x4_s2

    x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
    k = jax.random.normal(jax.random.key(1), (4, 4, 3, 5)) * 0.3
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2, 4, 3, 5))
    for i in range(4):
        for j in range(3):
            patch = xp[:, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4]  # (B, 4, 4, C)
            ref[:, i, j] = np.einsum("buvc,uvco->bo", patch, np.asarray(k, np.float64))
    for impl in ("lax", "im2col"):
        np.testing.assert_allclose(conv_4x4_s2(x, k, impl), ref, atol=1e-4)

    def penalty(kernel, impl):
        gx = jax.grad(lambda v: jnp.sum(jnp.tanh(conv_4x4_s2(v, kernel, impl))))(x)
        return jnp.sum((jnp.sqrt(jnp.sum(gx**2, axis=(1, 2, 3))) - 1.0) ** 2)

    g_lax = jax.grad(penalty)(k, "lax")
    g_im2col = jax.grad(penalty)(k, "im2col")
    np.testing.assert_allclose(g_im2col, g_lax, rtol=1e-4, atol=1e-5)


def test_wgan_gp_step_does_not_depend_on_the_penalty_conv_impl():
    config = load_config(str(REPO / "configs" / "wgan_gp.py") + ":smoke")
    batch = {
        "image": jax.random.uniform(jax.random.key(2), (8 * config.gan.n_critic, 16, 16, 3)) * 2
        - 1,
        "label": jnp.zeros((8 * config.gan.n_critic,), jnp.int32),
    }
    out = {}
    for impl in ("lax", "im2col"):
        config.model.d_penalty_conv_impl = impl
        task = build_task(config)
        state = task.init(jax.random.key(0), batch)
        new, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(3))
        out[impl] = (new["discriminator"].params, float(metrics["gradient_penalty"]))
    assert out["lax"][1] == pytest.approx(out["im2col"][1], rel=1e-4)
    for a, b in zip(jax.tree.leaves(out["lax"][0]), jax.tree.leaves(out["im2col"][0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_conv_transpose_module_params_do_not_depend_on_impl():
    x = jnp.ones((1, 4, 4, 3))
    shapes = {
        impl: jax.tree.map(
            jnp.shape, ConvTranspose4x4S2(5, impl=impl).init(jax.random.PRNGKey(0), x)
        )
        for impl in IMPLS
    }
    assert shapes["phase"] == shapes["vjp"] == shapes["lax"]
    assert shapes["phase"]["params"]["kernel"] == (4, 4, 3, 5)


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256])
def test_generator_and_discriminator_shapes(size):
    g = Generator(image_size=size, latent_dim=10, base_width=4, max_width=8)
    d = Discriminator(image_size=size, base_width=4, max_width=8)
    z = jnp.zeros((2, 10))
    gv = jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), z, train=False))
    out = jax.eval_shape(lambda v: g.apply(v, z, train=False), gv)
    assert out.shape == (2, size, size, 3)
    ups = [k for k in gv["params"] if k.startswith("up") and "norm" not in k]
    assert len(ups) == num_stages(size) == int(np.log2(size // 4))
    dv = jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), jnp.zeros(out.shape), train=False))
    logits = jax.eval_shape(lambda v: d.apply(v, jnp.zeros(out.shape), train=False), dv)
    assert logits.shape == (2,)


@pytest.mark.parametrize("size", [8, 48, 512])
def test_bad_image_size_is_rejected(size):
    with pytest.raises(ValueError, match="power of two"):
        num_stages(size)


def test_cgan_paper_config_has_paper_003_architecture():
    config = load_config(str(REPO / "configs" / "cgan.py") + ":paper")
    task = build_task(config)
    batch = {"image": jnp.zeros((4, 128, 128, 3)), "label": jnp.zeros((4,), jnp.int32)}
    state = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
    g = state["generator"].params
    assert g["project"]["kernel"].shape == (1500 + 2, 4 * 4 * 128)  # z ‖ one-hot(label)
    ups = sorted(k for k in g if k.startswith("up") and "norm" not in k)
    assert len(ups) == 5  # 4 -> 128 px in 5 transposed convs
    assert [g[k]["kernel"].shape for k in ups] == [(4, 4, 128, 128)] * 4 + [(4, 4, 128, 3)]
    d = state["discriminator"].params
    assert len([k for k in d if k.startswith("down")]) == 5
    assert "label_embed" in d
    assert config.batch_size == 125 and config.optim.g_lr == 2e-4 and config.optim.b1 == 0.5


def test_config_overrides_reach_the_model():
    config = load_config(
        str(REPO / "configs" / "dcgan.py") + ":smoke",
        ["--config.model.latent_dim=7", "--config.model.g_base_width=4", "--config.image_size=32"],
    )
    task = build_task(config)
    batch = {"image": jnp.zeros((2, 32, 32, 3)), "label": jnp.zeros((2,), jnp.int32)}
    g = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)["generator"].params
    # widths: min(max 16, 4·32/(2r)) -> 16 at 4×4
    assert g["project"]["kernel"].shape == (7, 4 * 4 * 16)
    assert len([k for k in g if k.startswith("up") and "norm" not in k]) == 3


def test_diffaugment_translation_is_a_zero_filled_shift():
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 16, 16, 3)) + 0.5  # strictly positive
    y = np.asarray(diff_augment(x, jax.random.PRNGKey(2), ("translation",)))
    xn = np.asarray(x)
    for img, out in zip(xn, y, strict=True):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = np.zeros_like(img)
                src = img[max(0, -dy) : 16 - max(0, dy), max(0, -dx) : 16 - max(0, dx)]
                shifted[
                    max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]
                ] = src
                matches.append(np.array_equal(shifted, out))
        assert sum(matches) == 1


def test_diffaugment_cutout_and_colour():
    x = jnp.ones((8, 16, 16, 3))
    y = np.asarray(diff_augment(x, jax.random.PRNGKey(3), ("cutout",)))
    zero_frac = (y == 0).all(-1).mean(axis=(1, 2))
    assert np.all(zero_frac > 0) and np.all(zero_frac <= 0.25 + 1e-6)  # ≤ an 8×8 square
    assert set(np.unique(y)) <= {0.0, 1.0}
    c = np.asarray(diff_augment(x * 0.2, jax.random.PRNGKey(4), ("color",)))
    assert not np.allclose(c, 0.2)  # brightness moved it
    grad = jax.grad(
        lambda v: diff_augment(
            v, jax.random.PRNGKey(5), parse_policy("color,translation,cutout")
        ).sum()
    )(x)
    assert float(jnp.abs(grad).sum()) > 0  # differentiable: G gets gradients through it
    with pytest.raises(ValueError, match="unknown policy"):
        parse_policy("color,zoom")


def test_conditional_generator_depends_on_label():
    config = load_config(str(REPO / "configs" / "cgan.py") + ":smoke")
    task = build_task(config)
    batch = {"image": jnp.zeros((2, 16, 16, 3)), "label": jnp.zeros((2,), jnp.int32)}
    state = task.init(jax.random.PRNGKey(0), batch)
    a = task.sample(state, jax.random.PRNGKey(1), 3, jnp.zeros(3, jnp.int32))
    b = task.sample(state, jax.random.PRNGKey(1), 3, jnp.ones(3, jnp.int32))
    assert a.shape == (3, 16, 16, 3) and float(jnp.abs(a - b).max()) > 1e-4
    assert float(jnp.abs(a).max()) <= 1.0


@pytest.mark.parametrize("name", ["cgan", "wgan_gp"])
def test_gan_trains_with_finite_losses(name, tmp_path):
    # DCGAN trains in tests/test_engine.py; the cGAN run also exercises DiffAugment in training
    extra = ["--config.gan.diffaugment=color,translation,cutout"] if name == "cgan" else []
    config = load_config(str(REPO / "configs" / f"{name}.py") + ":smoke", extra)
    config.num_steps = 3
    config.checkpoint_every = 100
    config.train.log_every = 1
    config.train.sample_every = 0
    config.train.ssim_every = 0
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    data = TrainData({"image": images, "label": rng.integers(0, 2, 16)}, None, ("a", "b"))
    task = build_task(config)
    init = task.init(jax.random.PRNGKey(config.seed), {"image": jnp.zeros((8, 16, 16, 3))})
    result = train(config, tmp_path, data)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"])
    if name == "wgan_gp":
        assert all(r["gradient_penalty"] >= 0 for r in records)
        assert int(result.state["discriminator"].ema_updates) == 3 * config.gan.n_critic
    # both networks moved away from their initialisation
    for net in ("generator", "discriminator"):
        before = jax.tree.leaves(init[net].params)
        after = jax.tree.leaves(result.state[net].params)
        assert any(not np.allclose(a, b) for a, b in zip(after, before, strict=True))


def test_paper_001_grid_covers_table_1():
    config_path = str(REPO / "configs" / "gan_grid.py")
    seen = set()
    for i in (0, 17, 71):
        c = load_config(f"{config_path}:smoke,i{i}")
        assert c.image_size == 16 and c.grid_index == i
        seen.add((c.optim.g_lr, c.optim.b1, c.optim.b2, c.model.latent_dim))
    assert len(seen) == 3
    import importlib.util

    spec = importlib.util.spec_from_file_location("gan_grid", config_path)
    grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid)
    points = grid.grid_points()
    assert len(points) == 72 == len({tuple(sorted(p.items())) for p in points})
    assert {p["optim.g_lr"] for p in points} == {1e-4, 2e-4, 1e-3}
    assert {p["optim.b1"] for p in points} == {0.5, 0.9}
    assert {p["optim.b2"] for p in points} == {0.9, 0.99, 0.999}
    assert {p["model.latent_dim"] for p in points} == {50, 100, 500, 1000}
    c = load_config(f"{config_path}:i71")
    assert (c.optim.g_lr, c.optim.b1, c.optim.b2, c.model.latent_dim) == (1e-3, 0.9, 0.999, 1000)
    with pytest.raises(Exception, match="out of range"):
        load_config(f"{config_path}:i72")


@pytest.mark.parametrize("name", ["dcgan", "wgan_gp"])
def test_discriminator_dropout_keys_differ_between_passes(name):
    """Every pass through D in one step draws its own dropout mask: the real pass, the fake pass
    and the pass inside G's loss (WGAN-GP: real, fake and the penalty of every critic update).
    One shared key gave all of them the same mask."""
    config = load_config(f"{name}:smoke", ["--config.model.d_dropout=0.3"])
    task = build_task(config)
    batch = {
        "image": jnp.zeros((config.batch_size, 16, 16, 3), jnp.float32),
        "label": jnp.zeros((config.batch_size,), jnp.int32),
    }
    state = jax.jit(task.init)(jax.random.PRNGKey(0), batch)
    seen = []
    original = task._critic

    def recording(params, x, labels, rng, module=None):
        jax.debug.callback(
            lambda kd: seen.append(np.asarray(kd).tobytes()), jax.random.key_data(rng)
        )
        return original(params, x, labels, rng, module)

    task._critic = recording
    jax.block_until_ready(jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(1)))
    passes = 3 if name == "dcgan" else 3 * config.gan.n_critic + 1
    assert len(seen) == passes
    assert len(set(seen)) == passes, "two passes through D shared a dropout key"
