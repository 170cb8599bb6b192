"""pix2pix and CycleGAN: U-Net/ResNet/PatchGAN shapes and receptive field, the image pool, the
cycle loss of identity generators, the VGG-19 weight mapping, and both tasks training a few
steps through the engine with finite losses and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

from fast_jax import configure  # noqa: E402

configure()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.models.i2i import (  # noqa: E402
    PatchDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    patchgan_depth,
    patchgan_layers,
    receptive_field,
)
from jaxsynth.train.loop import TrainData, train  # noqa: E402
from jaxsynth.train.task import build_task  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("size", "downs"), [(16, 3), (32, 5), (64, 4)])
def test_unet_shapes_and_skip_connections(size, downs):
    g = UNetGenerator(out_channels=3, base_width=4, max_width=8, num_downs=downs, num_dropout=1)
    x = jnp.zeros((2, size, size, 3))
    variables = g.init(jax.random.key(0), x)
    y = g.apply(variables, x)
    assert y.shape == (2, size, size, 3) and float(jnp.abs(y).max()) <= 1.0
    # one encoder and one decoder conv per level; decoder i>0 sees [skip ‖ up] channels
    params = variables["params"]
    assert sorted(k for k in params if k.startswith("down") and "norm" not in k) == [
        f"down{i}" for i in range(downs)
    ]
    assert params["up0"]["kernel"].shape[2] == 2 * min(8, 4)  # skip(4) ‖ up(4)
    # dropout only when asked, and then it changes the output
    x = jax.random.normal(jax.random.key(1), x.shape)
    a = g.apply(variables, x)
    b = g.apply(variables, x, dropout=True, rngs={"dropout": jax.random.key(2)})
    assert np.array_equal(a, g.apply(variables, x)) and not np.allclose(a, b)


def test_unet_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="divisible by 32"):
        UNetGenerator(num_downs=5).init(jax.random.key(0), jnp.zeros((1, 48, 48, 1)))


def test_resnet_generator_shape():
    g = ResnetGenerator(base_width=4, num_blocks=2)
    x = jnp.zeros((1, 16, 16, 3))
    assert g.apply(g.init(jax.random.key(0), x), x).shape == (1, 16, 16, 3)


def test_receptive_field_formula_and_pix2pix_values():
    assert receptive_field(patchgan_layers(3)) == 70  # pix2pix's 70×70 PatchGAN
    assert [receptive_field(patchgan_layers(n)) for n in range(4)] == [7, 16, 34, 70]
    assert [patchgan_depth(s) for s in (32, 64, 128, 256)] == [0, 1, 2, 3]


@pytest.mark.parametrize("num_down", [0, 1, 2, 3])
def test_patchgan_receptive_field_measured_by_gradient(num_down):
    """The input window one patch logit depends on, found from the gradient's support, has the
    side the formula gives (norm off: instance norm couples all pixels by design)."""
    size = 128
    d = PatchDiscriminator(base_width=4, max_width=8, num_down=num_down, norm="none")
    x = jax.random.normal(jax.random.key(0), (1, size, size, 3))
    params = d.init(jax.random.key(1), x)
    out = d.apply(params, x)
    side = size // 2**num_down - 2
    assert out.shape == (1, side, side, 1)
    c = side // 2
    grad = jax.grad(lambda v: d.apply(params, v)[0, c, c, 0])(x)
    support = np.abs(np.asarray(grad[0])).sum(axis=-1) > 0
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    rf = receptive_field(patchgan_layers(num_down))
    assert rows[-1] - rows[0] + 1 == rf and cols[-1] - cols[0] + 1 == rf


def test_image_pool_matches_a_python_reference():
    from jaxsynth.tasks.cyclegan import pool_query

    size, n_img = 3, 7
    pool = jnp.zeros((size, 1, 1, 1))
    count = jnp.zeros((), jnp.int32)
    ref_pool: list[float] = []
    rng = jax.random.key(5)
    for step in range(3):
        imgs = jnp.arange(n_img, dtype=jnp.float32).reshape(n_img, 1, 1, 1) + 100 * step
        key = jax.random.fold_in(rng, step)
        out, pool, count = pool_query(pool, count, imgs, key)
        # replay the same coins in Python
        expected = []
        for i, k in enumerate(jax.random.split(key, n_img)):
            k_coin, k_idx = jax.random.split(k)
            img = float(imgs[i, 0, 0, 0])
            if len(ref_pool) < size:
                ref_pool.append(img)
                expected.append(img)
            elif float(jax.random.uniform(k_coin)) > 0.5:
                j = int(jax.random.randint(k_idx, (), 0, size))
                expected.append(ref_pool[j])
                ref_pool[j] = img
            else:
                expected.append(img)
        np.testing.assert_array_equal(np.asarray(out).ravel(), expected)
        np.testing.assert_array_equal(np.asarray(pool).ravel(), ref_pool)
    assert int(count) == size


def _smoke(name: str, steps: int):
    config = load_config(str(REPO / "configs" / f"{name}.py") + ":smoke")
    config.num_steps = steps
    config.checkpoint_every = 2
    config.train.log_every = 1
    config.train.sample_every = 0
    # a constant lr keeps the compiled step independent of num_steps, so the three runs of the
    # resume check share one compilation (the decay itself: test_lr_schedule_*)
    config.optim.decay_start = 1.0
    return config


def _pix2pix_data(n=12, size=16):
    from jaxsynth.data.phantom import render_pairs

    pairs = render_pairs(seed=1, indices=range(n), image_size=size)
    return TrainData({"image": pairs["a"], "label": pairs["label"], "mask": pairs["mask"]})


def _cyclegan_data(config, n=8):
    from jaxsynth.data.phantom import render_pairs

    pairs = render_pairs(seed=1, indices=range(n), image_size=config.image_size)
    data = TrainData({"image": pairs["a"], "label": pairs["label"]})
    return build_task(config).prepare_data(data)


def _assert_exact_resume(config, data, tmp_path, total):
    full = train(config, tmp_path / "full", data)
    config.num_steps = total // 2
    train(config, tmp_path / "split", data)
    config.num_steps = total
    resumed = train(config, tmp_path / "split", data)
    assert resumed.resumed_from == total // 2
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    records = [
        json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == list(range(1, total + 1))
    for r in records:
        assert all(np.isfinite(v) for v in r.values())
    return full, records


@pytest.mark.slow
def test_pix2pix_trains_with_finite_losses_and_resumes_exactly(tmp_path):
    config = _smoke("pix2pix", 4)
    config.perceptual.weight = 1.0  # the random-CNN fallback rides along
    data = _pix2pix_data()
    full, records = _assert_exact_resume(config, data, tmp_path, 4)
    assert all(r["l1_loss"] > 0 and "perceptual_loss" in r for r in records)
    bank = full.state["generator"].batch_stats  # the training masks, for sampling layouts
    assert int(bank["bank_count"]) == 4 * config.batch_size
    sample = {"image": jnp.zeros((4, 16, 16, 3)), "mask": jnp.zeros((4, 16, 16, 1))}
    init = jax.jit(build_task(config).init)(jax.random.PRNGKey(config.seed), sample)
    # G and D moved; the perceptual net did not
    for net, moved in (("generator", True), ("discriminator", True), ("perceptual", False)):
        pairs = zip(
            jax.tree.leaves(init[net].params), jax.tree.leaves(full.state[net].params), strict=True
        )
        assert any(not np.array_equal(a, b) for a, b in pairs) == moved, net


def test_pix2pix_sample_and_translate_shapes():
    config = _smoke("pix2pix", 1)
    task = build_task(config)
    batch = {"image": jnp.zeros((2, 16, 16, 3)), "mask": jnp.zeros((2, 16, 16, 1))}
    state = task.init(jax.random.key(0), batch)
    out = task.sample(state, jax.random.key(1), 3, jnp.array([0, 1, 0]))
    assert out.shape == (3, 16, 16, 3)
    masks = jnp.ones((2, 16, 16, 1))
    a = task.translate(state, masks, jnp.array([0, 0]))
    b = task.translate(state, masks, jnp.array([1, 1]))
    assert not np.allclose(a, b)  # the class label is an input


def test_pix2pix_without_masks_is_a_user_error():
    from jaxsynth.errors import UserError

    task = build_task(_smoke("pix2pix", 1))
    with pytest.raises(UserError, match="needs nuclei masks"):
        task.init(jax.random.key(0), {"image": jnp.zeros((2, 16, 16, 3))})


def test_cycle_loss_of_identity_generators_is_zero():
    """With both generators the identity, the cycle and identity terms vanish exactly and the
    translation returns its input; a perturbed generator gives a positive cycle loss."""
    from jaxsynth.tasks import cyclegan

    config = _smoke("cyclegan", 1)
    task = build_task(config)
    data = _cyclegan_data(config)
    batch = {k: jnp.asarray(v[:2]) for k, v in data.arrays.items()}
    batch["image"] = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    state = task.init(jax.random.key(0), batch)

    class Identity:
        def apply(self, variables, x, **kw):
            return x + 0.0 * jax.tree.leaves(variables["params"])[0].sum()

    task.generator = Identity()
    _, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(1))
    assert float(metrics["cycle_loss"]) == 0.0 and float(metrics["identity_loss"]) == 0.0
    x = batch["image"][:, :, :16]
    np.testing.assert_array_equal(task.translate(state, x, "ab"), x)

    class Shift(Identity):
        def apply(self, variables, x, **kw):
            return super().apply(variables, x) + 0.1

    task.generator = Shift()
    _, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(1))
    assert float(metrics["cycle_loss"]) == pytest.approx(0.4, abs=1e-5)  # 2 domains × 0.2
    assert cyclegan.CycleGanTask  # the module is the one under test


@pytest.mark.slow
def test_cyclegan_trains_with_finite_losses_and_resumes_exactly(tmp_path):
    config = _smoke("cyclegan", 4)
    data = _cyclegan_data(config)
    assert data.arrays["image"].shape == (8, 16, 32, 3)
    full, records = _assert_exact_resume(config, data, tmp_path, 4)
    assert all(r["cycle_loss"] > 0 for r in records)
    # the pools filled up (pool_size 3, batch 2 per domain, 4 steps) and are checkpointed
    stats = full.state["discriminator"].batch_stats
    assert int(stats["count_a"]) == int(stats["count_b"]) == config.cyclegan.pool_size


def test_cyclegan_domain_b_needs_the_phantom():
    from jaxsynth.errors import UserError

    config = _smoke("cyclegan", 1)
    config.data.source = "folder:/nowhere"
    data = TrainData({"image": np.zeros((2, 16, 16, 3), np.uint8), "label": np.zeros(2)})
    with pytest.raises(UserError, match="rendered by the phantom"):
        build_task(config).prepare_data(data)


def test_cyclegan_rejects_flips():
    from jaxsynth.errors import UserError

    config = _smoke("cyclegan", 1)
    config.data.augment = "flip"
    with pytest.raises(UserError, match="swap the domains"):
        build_task(config)


def test_vgg19_state_dict_mapping_matches_a_numpy_conv():
    from jaxsynth.models.vgg import VGG19_CFG, VGG19Features, torch_conv_indices
    from jaxsynth.models.vgg import vgg19_params_from_state_dict as to_params

    rng = np.random.default_rng(0)
    sd, c_in = {}, 3
    widths = [v for v in VGG19_CFG if v != "M"]
    for idx, w in zip(torch_conv_indices(), widths, strict=True):
        sd[f"features.{idx}.weight"] = rng.normal(0, 0.05, (w, c_in, 3, 3)).astype(np.float32)
        sd[f"features.{idx}.bias"] = rng.normal(0, 0.05, (w,)).astype(np.float32)
        c_in = w
    assert torch_conv_indices()[:4] == [0, 2, 5, 7] and torch_conv_indices()[-1] == 34
    params = to_params(sd, "test.pth")
    x = rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    taps = VGG19Features().apply({"params": params}, jnp.asarray(x))
    assert [t.shape[1] for t in taps] == [16, 8, 4, 2, 1]
    # relu1_1 by hand: torch's cross-correlation with OIHW weights on the normalised input
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    h = np.pad(((x[0] + 1) / 2 - mean) / std, ((1, 1), (1, 1), (0, 0)))
    w, b = sd["features.0.weight"], sd["features.0.bias"]
    ref = np.zeros((16, 16, 64))
    for i in range(16):
        for j in range(16):
            ref[i, j] = np.einsum("oiuv,uvi->o", w, h[i : i + 3, j : j + 3]) + b
    np.testing.assert_allclose(taps[0][0], np.maximum(ref, 0), atol=1e-4)
    del sd["features.34.bias"]
    with pytest.raises(ValueError, match="features.34.bias"):
        to_params(sd, "test.pth")


def test_lr_schedule_is_constant_then_linear_to_zero():
    import ml_collections

    from jaxsynth.tasks.i2i_common import lr_schedule

    c = ml_collections.ConfigDict(
        {"num_steps": 10, "optim": {"lr": 2e-4, "b1": 0.5, "b2": 0.999, "decay_start": 0.4}}
    )
    got = [float(lr_schedule(c)(t)) for t in range(11)]
    ref = [2e-4 * min(1.0, (10 - t) / 6) for t in range(11)]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-12)
    c.optim.decay_start = 1.0
    assert all(float(lr_schedule(c)(t)) == pytest.approx(2e-4) for t in range(11))


def test_mask_bank_ring_buffer_and_new_layouts_from_same_class_quadrants():
    from jaxsynth.tasks.mask_bank import bank_add, bank_init, bank_layouts, dihedral

    s = 8
    rng = np.random.default_rng(0)
    tumour = (rng.uniform(size=(s, s, 1)) > 0.6).astype(np.float32)
    bank = bank_init(3, s)
    # class 0 rows are empty masks, class 1 rows the one tumour mask; 5 rows into 3 slots
    masks = jnp.stack([jnp.zeros((s, s, 1)), jnp.asarray(tumour)] * 2 + [jnp.asarray(tumour)])
    labels = jnp.array([0, 1, 0, 1, 1])
    bank = bank_add(bank, masks[:2], labels[:2])
    bank = bank_add(bank, masks[2:], labels[2:])
    assert int(bank["bank_count"]) == 5
    np.testing.assert_array_equal(bank["bank_labels"], [1, 1, 0])  # slots 3,4 -> 0,1; 2 kept
    fallback = jnp.full((6, s, s, 1), 0.5)
    out = np.asarray(bank_layouts(bank, jax.random.key(0), jnp.array([1, 1, 1, 1, 0, 0]), fallback))
    transforms = [np.asarray(dihedral(jnp.asarray(tumour), jnp.int32(k))) for k in range(8)]
    assert len({t.tobytes() for t in transforms}) == 8  # a mask with no symmetry
    h = s // 2
    quadrants = [(slice(0, h), slice(0, h)), (slice(0, h), slice(h, s))]
    quadrants += [(slice(h, s), slice(0, h)), (slice(h, s), slice(h, s))]
    for i in range(4):  # tumour rows: every quadrant is that quadrant of a transformed mask
        for q in quadrants:
            assert any(np.array_equal(out[i][q], t[q]) for t in transforms)
    assert not all(np.array_equal(out[i], tumour) for i in range(4))  # new layouts, not copies
    np.testing.assert_array_equal(out[4:], 0.0)  # class 0 draws only class-0 (empty) masks
    empty = bank_init(3, s)  # nothing banked yet: the fallback passes through
    np.testing.assert_array_equal(bank_layouts(empty, jax.random.key(1), None, fallback), fallback)
    # dihedral element k matches numpy's flips and rotations
    x = rng.uniform(size=(s, s, 1)).astype(np.float32)
    for k in range(8):
        ref = np.rot90(x[:, ::-1] if k // 4 else x, k % 4, axes=(0, 1))
        np.testing.assert_array_equal(dihedral(jnp.asarray(x), jnp.int32(k)), ref)


def test_i2i_study_config_adds_a_pix2pix_arm_on_the_study_split():
    from jaxsynth.study.generators import generator_config

    study = load_config(str(REPO / "configs" / "i2i_study.py") + ":smoke")
    assert study.generators[-1] == "pix2pix"
    cfg = generator_config(study, "pix2pix")
    assert cfg.image_size == study.image_size and cfg.seed == study.seed
    assert cfg.data.split.to_dict() == study.data.split.to_dict()
    assert tuple(cfg.data.train_classes) == ("normal", "tumour")
    task = build_task(cfg)
    assert task.name == "pix2pix" and task.conditional and task.bank_size > 0
