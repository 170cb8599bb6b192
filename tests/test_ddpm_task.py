"""The DDPM task end to end on tiny shapes: training lowers the loss, sampling is seeded and
deterministic, mask-guided samples follow their masks, class labels steer the network, and
4-device sampling equals 1-device sampling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsynth.config import load_config
from jaxsynth.diffusion.samplers import SamplerOptions
from jaxsynth.diffusion.segmentation import mask_guided_iou
from jaxsynth.errors import UserError
from jaxsynth.tasks.ddpm import make_task, random_disc_masks

SIZE = 16
BACKGROUND = np.array([235.0, 170.0, 205.0])  # eosin pink
NUCLEUS = np.array([95.0, 60.0, 150.0])  # haematoxylin purple


def blob_batch(n: int, seed: int) -> dict:
    """H&E-like 16 px tiles with 2-4 large 'nuclei' and their exact masks (loader format)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        for cy, cx, r in rng.uniform([3, 3, 2.0], [13, 13, 3.5], (rng.integers(2, 5), 3)):
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    img = np.where(masks[..., None], NUCLEUS, BACKGROUND) + rng.normal(0, 4, masks.shape + (3,))
    img = np.clip(img, 0, 255) / 127.5 - 1.0
    return {
        "image": jnp.asarray(img, jnp.float32),
        "label": jnp.zeros((n,), jnp.int32),
        "mask": jnp.asarray(masks[..., None], jnp.float32),
    }


def smoke_task(*mods: str, **overrides):
    config = load_config("configs/ddpm.py:" + ",".join(("smoke",) + mods))
    config.ddpm.timesteps = 100
    for k, v in overrides.items():
        node = config
        *path, leaf = k.split("__")
        for p in path:
            node = node[p]
        node[leaf] = v
    return make_task(config)


def train(task, batch_fn, steps: int, seed: int = 0):
    state = jax.jit(task.init)(jax.random.key(seed), batch_fn(0))
    step = jax.jit(task.train_step)
    for i in range(steps):
        # the engine's per-step key: fold_in(state.rng, state.step); here the step counter is i
        state, metrics = step(state, batch_fn(i), jax.random.fold_in(state.rng, i))
        state = state.replace(step=state.step + 1)
    return state, metrics


@pytest.fixture(scope="module")
def mask_model():
    """One tiny mask-conditioned model (paper 002 variant 2) shared by several tests, because
    compiling a U-Net's init, step and sampler dominates the test time on CPU."""
    task = smoke_task("mask", optim__lr=3e-3, model__base_channels=16)
    state0 = jax.jit(task.init)(jax.random.key(0), blob_batch(16, 0))
    state, metrics = train(task, lambda i: blob_batch(16, 1000 + i), 150)
    return task, state0, state, metrics


def test_training_steps_reduce_the_loss_on_a_fixed_batch(mask_model):
    task, state0, state, metrics = mask_model
    fixed = blob_batch(32, 7)
    eval_loss = jax.jit(lambda p: task.loss(p, fixed, jax.random.key(123))[0])
    before = float(eval_loss(state0["model"].params))
    after = float(eval_loss(state["model"].params))
    assert np.isfinite(after) and after < 0.5 * before, (before, after)
    assert set(metrics) >= {"loss", "mse", "grad_norm"}
    assert int(state["model"].ema_updates) == 150  # EMA lives in the engine's state


def test_ddim_eta0_is_deterministic_given_the_seed(mask_model):
    task, _, state, _ = mask_model
    opts = SamplerOptions("ddim", steps=5, eta=0.0)
    masks = blob_batch(4, 5)["mask"]
    run = jax.jit(lambda s, k, m: task.sample_with_options(s, k, m.shape[0], masks=m, options=opts))
    a = np.asarray(run(state, jax.random.key(7), masks))
    b = np.asarray(run(state, jax.random.key(7), masks))
    c = np.asarray(run(state, jax.random.key(8), masks))
    assert a.shape == (4, SIZE, SIZE, 3) and a.min() >= -1 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3
    # sample k depends on (seed, k) only, not on the batch size
    d = np.asarray(run(state, jax.random.key(7), masks[:2]))
    np.testing.assert_allclose(d, a[:2], atol=1e-3)  # conv algorithms vary with batch size


def test_engine_sample_hook_draws_random_masks(mask_model):
    task, _, state, _ = mask_model
    out = jax.jit(lambda s, k: task.sample(s, k, 3))(state, jax.random.key(0))
    assert out.shape == (3, SIZE, SIZE, 3) and bool(jnp.all(jnp.isfinite(out)))


def test_mask_guided_samples_follow_their_masks(mask_model):
    """Paper 002 variant 2: the model, trained briefly on blob tiles, must produce images whose
    re-segmented nuclei overlap the INPUT masks clearly better than other images' masks."""
    task, _, state, _ = mask_model
    held_out = blob_batch(16, 99)
    opts = SamplerOptions("ddim", steps=20, eta=0.0)
    images = jax.jit(lambda s, k, m: task.sample_with_options(s, k, 16, masks=m, options=opts))(
        state, jax.random.key(3), held_out["mask"]
    )
    scores = mask_guided_iou(np.asarray(images), np.asarray(held_out["mask"]))
    assert scores["iou"] > 2 * scores["iou_shuffled"] and scores["iou"] > 0.2, scores
    assert scores["iou"] > scores["iou_shuffled"] + 0.1, scores


def test_class_mode_trains_with_label_dropout_and_labels_steer_the_network():
    """Class mode (classifier-free guidance): the loss drops label-by-label with the null label
    mixed in, and after perturbing the weights, label 0, label 1 and the null label give three
    different network outputs for the same input (the embedding reaches the output)."""
    task = smoke_task("class")
    assert task.num_classes == 2 and task.conditional
    batch = blob_batch(8, 3)
    batch["label"] = jnp.array([0, 1] * 4, jnp.int32)
    state = jax.jit(task.init)(jax.random.key(0), batch)
    params = state["model"].params
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(
        tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )
    x = batch["image"][:1]
    t = jnp.array([10])
    outs = [
        np.asarray(task.apply_fn({"params": params}, x, t, jnp.array([lb]), None, False, None))
        for lb in (0, 1, 2)
    ]
    assert np.abs(outs[0] - outs[1]).mean() > 1e-3
    assert np.abs(outs[0] - outs[2]).mean() > 1e-3
    loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(2))
    assert np.isfinite(float(loss)) and float(metrics["mse"]) > 0


def two_class_batch(n: int, seed: int) -> dict:
    """Class 0: pale pink tiles with few small nuclei; class 1: purple tiles crowded with large
    dark nuclei (the phantom's normal / tumour contrast, exaggerated), alternating labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    labels = np.arange(n) % 2
    images = np.empty((n, SIZE, SIZE, 3))
    for i, lab in enumerate(labels):
        count, radius = ((1, 2), (1.5, 2.0)) if lab == 0 else ((5, 8), (2.5, 3.5))
        mask = np.zeros((SIZE, SIZE), bool)
        for _ in range(rng.integers(*count)):
            cy, cx = rng.uniform(2, 14, 2)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(*radius) ** 2
        background = BACKGROUND if lab == 0 else np.array([170.0, 110.0, 190.0])
        images[i] = np.where(mask[..., None], NUCLEUS, background)
    images = np.clip(images + rng.normal(0, 4, images.shape), 0, 255) / 127.5 - 1.0
    return {"image": jnp.asarray(images, jnp.float32), "label": jnp.asarray(labels, jnp.int32)}


def test_class_conditional_samples_take_the_colour_of_their_class():
    """Issue 4's 'each class looks like its class', on tiny shapes: a briefly trained class model
    sampled per label (DDIM, guidance 2) gives tiles whose mean colour is nearer the real tiles
    of that label than of the other, with a per-image colour spread like the real one (the eps
    model's first DDIM steps once gave saturated random colours: spread 4x the real one)."""
    task = smoke_task("class", optim__lr=3e-3, model__base_channels=16)
    assert task.config.ddpm.prediction == "v"
    state, _ = train(task, lambda i: two_class_batch(16, 2000 + i), 150)
    real = np.asarray(two_class_batch(64, 5)["image"])
    real_mean = [real[k::2].mean(axis=(0, 1, 2)) for k in (0, 1)]
    opts = SamplerOptions("ddim", steps=20, eta=0.0, guidance=2.0, prediction="v")
    run = jax.jit(lambda s, k, lab: task.sample_with_options(s, k, 16, labels=lab, options=opts))
    for k in (0, 1):
        fake = np.asarray(run(state, jax.random.key(k), jnp.full((16,), k, jnp.int32)))
        colour = fake.mean(axis=(1, 2))  # (16, 3) per-image mean colour
        own = np.linalg.norm(colour - real_mean[k], axis=1)
        other = np.linalg.norm(colour - real_mean[1 - k], axis=1)
        assert (own < other).mean() >= 0.9, (k, own, other)
        spread = colour.std(axis=0).mean()
        real_spread = real[k::2].mean(axis=(1, 2)).std(axis=0).mean()
        assert spread < real_spread + 0.1, (k, spread, real_spread)


def test_random_disc_masks_shape_and_coverage():
    m = np.asarray(random_disc_masks(jax.random.key(0), 8, 32))
    assert m.shape == (8, 32, 32, 1) and set(np.unique(m)) <= {0.0, 1.0}
    assert 0.01 < m.mean() < 0.4


def test_bad_config_is_a_one_line_user_error():
    config = load_config("configs/ddpm.py:smoke", ["--config.ddpm.label=normal"])
    with pytest.raises(UserError, match="train_classes"):
        make_task(config)
    config = load_config("configs/ddpm.py:smoke", ["--config.ddpm.conditioning=text"])
    with pytest.raises(UserError, match="conditioning"):
        make_task(config)
    task = make_task(load_config("configs/ddpm.py:smoke,mask"))
    with pytest.raises(UserError, match="masks"):
        task._cond({"image": jnp.zeros((1, 16, 16, 3))})


MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh
    from jaxsynth.diffusion.samplers import SamplerOptions, make_sampler
    from jaxsynth.diffusion.schedules import make_schedule
    from jaxsynth.models.unet import UNet

    assert jax.device_count() == 4, jax.devices()
    net = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
               attention_resolutions=(8,), num_heads=2, num_classes=2)
    x = jnp.zeros((1, 16, 16, 3))
    variables = jax.jit(net.init)(jax.random.key(0, impl="rbg"), x, jnp.zeros((1,), jnp.int32),
                                  jnp.zeros((1,), jnp.int32), jnp.zeros((1, 16, 16, 1)))
    # random (non-zero) weights everywhere, so the output depends on every layer
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    variables = jax.tree.unflatten(tree, [l + 0.2 * jax.random.normal(k, l.shape)
                                          for l, k in zip(leaves, keys)])
    apply_fn = lambda v, x, t, l, c, train, rngs: net.apply(v, x, t, l, c, train)
    sched = make_schedule("cosine", 20)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    n = 6  # not a multiple of 4: exercises padding
    labels = jnp.array([0, 1, 0, 1, 1, 0])
    cond = (jax.random.uniform(jax.random.key(2), (n, 16, 16, 1)) > 0.5).astype(jnp.float32)
    for opts in (SamplerOptions("ddim", 8, eta=0.5, guidance=2.0), SamplerOptions("ddpm")):
        one = make_sampler(apply_fn, sched, opts, num_classes=2)
        four = make_sampler(apply_fn, sched, opts, num_classes=2, mesh=mesh)
        a = one(variables, jax.random.key(5), n, (16, 16, 3), labels, cond)
        b = four(variables, jax.random.key(5), n, (16, 16, 3), labels, cond)
        assert len(b.sharding.device_set) == 4 or b.shape[0] == n
        diff = float(jnp.abs(np.asarray(a) - np.asarray(b)).max())
        spread = float(jnp.std(a))
        print(opts.sampler, "max|1dev-4dev|", diff, "std", spread)
        mean_diff = float(jnp.abs(np.asarray(a) - np.asarray(b)).mean())
        print("mean|1dev-4dev|", mean_diff)
        # equal up to float reassociation in the sharded convolutions, amplified by the chain
        assert diff < 2e-3 and mean_diff < 1e-4 and spread > 0.05
    print("OK")
    """
)


def test_four_device_sampling_equals_one_device_sampling(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    script = tmp_path / "multi.py"
    script.write_text(MULTI_DEVICE_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout
