"""DreamBooth-style prior preservation in the SD fine-tuning Task, on the micro SD fixture.

`tests/fixtures/sd_pt/pipeline` (random weights, 32-px tiles -> 4x4 latents) stands in for SD as
in tests/test_sd_finetune.py. What is checked: bad settings are one-line errors; with the option
off the step is today's step; the prior latents are the task's own sampler on the base U-Net,
deterministic in the seed and never touched by training; the loss is instance + w * prior
computed by hand on the same noise; w = 0 gives the gradients of the option off; resume is
exact with the prior on (in-process, and kill -9 through the CLI).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from fast_jax import configure  # noqa: E402

configure()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_sd_finetune import finish, smoke_config, start_cli, tiles  # noqa: E402

from jaxsynth.errors import UserError  # noqa: E402
from jaxsynth.sd import finetune as ft  # noqa: E402
from jaxsynth.tasks import sd_prior  # noqa: E402

BATCH = {"image": jnp.zeros((8, 32, 32, 3)), "label": jnp.zeros((8,), jnp.int32)}
ON = "--config.sd_ft.prior_preservation=True"


def prior_task(*overrides: str, variant: str = "smoke"):
    task = ft.make_task(smoke_config(ON, *overrides, variant=variant))
    task.prepare(*tiles())
    return task


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.sd_ft.num_class_images=0", "sd_ft.num_class_images=0: prior preservation"),
        ("--config.sd_ft.prior_loss_weight=-1.0", "sd_ft.prior_loss_weight=-1.0: must be >= 0"),
        ("--config.sd_ft.prior_sampler_steps=0", "sd_ft.prior_sampler_steps=0: must be in 1..1000"),
        (
            "--config.sd_ft.prior_prompt=H&E histopathology tile, normal tissue",
            "sd_ft.prior_prompt='H&E histopathology tile, normal tissue': must be a generic",
        ),
        ("--config.sd_ft.prior_prompt=", "sd_ft.prior_prompt='': must be a generic"),
    ],
)
def test_bad_prior_settings_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as e:
        ft.make_task(smoke_config(ON, override))
    assert "\n" not in str(e.value)
    # Off, the prior keys are not read: the same value is no error.
    task = ft.make_task(smoke_config(override))
    assert task.prior_label is None and task.sd.prompt_ids.shape[0] == 3  # 2 classes + empty


def test_memory_estimate_has_the_prior_row():
    rows = dict(ft.memory_estimate(ft.make_task(smoke_config(ON))))
    assert rows["prior latents"] == 8 * 4 * 4 * 4 * 4  # num_class_images x 4x4x4 float32
    assert "prior latents" not in dict(ft.memory_estimate(ft.make_task(smoke_config())))


def reference_step(task, state, batch, rng):
    """Today's (pre-prior) `train_step`, spelled out: the option off must run exactly this."""
    k_lat, k_loss = jax.random.split(rng)
    frozen = state["frozen"].params
    latents, labels = task._latents(state, batch, k_lat)
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)
    (_, metrics), grads = grad_fn(state["unet"].params, frozen, latents, labels, k_loss)
    metrics = dict(metrics, grad_norm=jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    return state.with_model("unet", state["unet"].apply_gradients(grads)), metrics


@pytest.mark.slow  # two LoRA step compiles
def test_prior_off_is_todays_step():
    task = ft.make_task(smoke_config())
    task.prepare(*tiles())
    state = jax.jit(task.init)(jax.random.PRNGKey(0), BATCH)
    assert set(state.models) == {"unet", "frozen"}  # no prior in the state
    rng = jax.random.PRNGKey(1)
    new, metrics = jax.jit(task.train_step)(state, BATCH, rng)
    ref, ref_metrics = jax.jit(lambda s, b, r: reference_step(task, s, b, r))(state, BATCH, rng)
    assert set(metrics) == {"loss", "mse", "grad_norm"}
    for k in ("loss", "mse"):
        assert np.asarray(metrics[k]) == np.asarray(ref_metrics[k]), k
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # the sampler, the VAE decoder and one LoRA step compile
def test_prior_latents_are_the_base_models_samples_and_stay_fixed():
    task = prior_task()
    init = jax.jit(task.init)
    state = init(jax.random.PRNGKey(0), BATCH)
    prior = np.asarray(state["prior"].params["latents"])
    assert prior.shape == (8, 4, 4, 4) and np.isfinite(prior).all() and prior.std() > 0.1

    # Deterministic in the seed: the same seed gives the same bits, another seed other latents.
    def again(seed):
        return np.asarray(init(jax.random.PRNGKey(seed), BATCH)["prior"].params["latents"])

    np.testing.assert_array_equal(again(0), prior)
    assert not np.allclose(again(1), prior)
    # They are the task's own sampler (`sample_with`: DDIM + guidance, then the VAE decoder) on
    # the base U-Net for the prior prompt, with the prior key: decode them and compare.
    key = jax.random.fold_in(jax.random.PRNGKey(0), sd_prior.PRIOR_SEED_FOLD)
    labels = jnp.full((8,), task.prior_label, jnp.int32)
    s = task.config.sd_ft
    images = jax.jit(
        lambda st: task.sample_with(st, key, labels, s.prior_sampler_steps, s.prior_guidance)
    )(state)
    frozen = state["frozen"].params
    decoded = jax.jit(
        lambda z: (
            task.sd.vae.apply(
                {"params": frozen["vae"]},
                jnp.transpose(z / task.scaling, (0, 3, 1, 2)),
                method=task.sd.vae.decode,
            ).sample
        )
    )(jnp.asarray(prior))
    decoded = np.clip(np.transpose(np.asarray(decoded), (0, 2, 3, 1)), -1.0, 1.0)
    # float rounding only (one program vs two); a different sample would differ by ~0.1-1
    np.testing.assert_allclose(decoded, np.asarray(images), atol=1e-4)
    # ... and the U-Net they came from matters: another U-Net gives other latents.
    other = jax.tree.map(lambda a: np.asarray(a, np.float32) * 1.1, task.sd.params["unet"])
    moved = task.prior_latents(other, task.sd.params["text_encoder"], key)
    assert np.abs(np.asarray(moved) - prior).max() > 1e-3
    # Training moves the adapters, never the prior latents; the metrics report both losses.
    new, metrics = jax.jit(task.train_step)(state, BATCH, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(new["prior"].params["latents"]), prior)
    assert min(np.abs(np.asarray(v["up"])).max() for v in new["unet"].params["lora"].values()) > 0
    m = {k: float(v) for k, v in metrics.items()}
    assert m["loss_prior"] > 0 and m["loss_instance"] > 0
    assert m["loss"] == pytest.approx(m["loss_instance"] + 1.0 * m["loss_prior"], rel=1e-6)


def test_prior_loss_is_instance_plus_w_times_prior_by_hand():
    """`prior_preservation_loss` against numpy: the same keys' noise and timesteps, each half
    through the U-Net on its own, min-SNR weights, v target and prompt dropout by hand."""
    task = ft.make_task(smoke_config(ON, "--config.sd_ft.prediction=v", variant="smoke,full"))
    s = task.config.sd_ft
    p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), task.sd.params)
    emb = task.prompt_embeddings(p["text_encoder"])
    apply_fn = task._unet_fn({"unet": p["unet"]}, {}, emb)
    r = np.random.default_rng(0)
    x0 = jnp.asarray(r.normal(size=(3, 4, 4, 4)), jnp.float32)
    prior = jnp.asarray(r.normal(size=(3, 4, 4, 4)), jnp.float32)
    labels = jnp.asarray([0, 1, 1], jnp.int32)
    prior_labels = jnp.full((3,), task.prior_label, jnp.int32)
    rng, w, drop = jax.random.PRNGKey(7), 0.7, 0.5
    loss, m = jax.jit(
        lambda: sd_prior.prior_preservation_loss(
            apply_fn,
            {"unet": p["unet"]},
            task.schedule,
            x0,
            labels,
            prior,
            prior_labels,
            rng,
            prior_weight=w,
            prediction="v",
            weighting="min_snr",
            snr_gamma=5.0,
            label_dropout=drop,
            num_classes=2,
        )  # fmt: skip
    )()

    ac = np.asarray(task.schedule.alphas_cumprod, np.float64)

    def half(x, lab, key):
        k_t, k_n, k_d, _ = jax.random.split(key, 4)
        t = np.asarray(jax.random.randint(k_t, (3,), 0, 1000))
        eps = np.asarray(jax.random.normal(k_n, x.shape), np.float64)
        lab = np.where(np.asarray(jax.random.bernoulli(k_d, drop, (3,))), 2, np.asarray(lab))
        a, b = np.sqrt(ac[t])[:, None, None, None], np.sqrt(1 - ac[t])[:, None, None, None]
        x_t = a * np.asarray(x, np.float64) + b * eps
        out = apply_fn({"unet": p["unet"]}, jnp.asarray(x_t, jnp.float32), jnp.asarray(t),
                       jnp.asarray(lab), None, True, None)  # fmt: skip
        target = a * eps - b * np.asarray(x, np.float64)  # v
        snr = ac[t] / (1 - ac[t])
        weight = np.minimum(snr, 5.0) / (snr + 1.0)
        return np.mean(weight * np.mean((np.asarray(out, np.float64) - target) ** 2, (1, 2, 3)))

    inst = half(x0, labels, rng)
    pri = half(prior, prior_labels, jax.random.fold_in(rng, 1))
    assert float(m["loss_instance"]) == pytest.approx(inst, rel=1e-4)
    assert float(m["loss_prior"]) == pytest.approx(pri, rel=1e-4)
    assert float(loss) == pytest.approx(inst + w * pri, rel=1e-4)
    assert abs(inst - pri) > 1e-3 * inst  # the halves really differ (the weight is tested)
    assert s.prior_prompt == "H&E histopathology tile"


@pytest.mark.slow  # two full fine-tuning gradient compiles
def test_zero_prior_weight_gives_the_gradients_of_prior_off():
    """With w = 0 the prior half adds nothing: the gradient is the option-off gradient (same
    instance latents, timesteps and noise; only float rounding of the 2B-batch U-Net call)."""
    on = prior_task("--config.sd_ft.prior_loss_weight=0.0", variant="smoke,full")
    off = ft.make_task(smoke_config(variant="smoke,full"))
    off.prepare(*tiles())
    state = jax.jit(on.init)(jax.random.PRNGKey(0), BATCH)
    rng = jax.random.PRNGKey(5)
    k_lat, k_loss = jax.random.split(rng)  # as train_step splits the step key
    params, frozen = state["unet"].params, state["frozen"].params

    @jax.jit
    def grads_on(st):
        latents, labels = on._latents(st, BATCH, k_lat)
        prior = sd_prior.draw_prior(
            st["prior"].params["latents"], jax.random.fold_in(rng, 2), 8, on.prior_label
        )
        fn = jax.value_and_grad(on.prior_loss, has_aux=True)
        return fn(params, frozen, latents, labels, *prior, k_loss)

    @jax.jit
    def grads_off(st):
        latents, labels = off._latents(st, BATCH, k_lat)
        return jax.value_and_grad(off.loss, has_aux=True)(params, frozen, latents, labels, k_loss)

    (_, m_on), g_on = grads_on(state)
    (_, m_off), g_off = grads_off(state)
    assert float(m_on["loss_prior"]) > 0 and float(m_on["loss"]) == float(m_on["loss_instance"])
    assert float(m_on["loss"]) == pytest.approx(float(m_off["loss"]), rel=1e-5)
    scale = max(float(np.abs(np.asarray(g)).max()) for g in jax.tree.leaves(g_off))
    for a, b in zip(jax.tree.leaves(g_on), jax.tree.leaves(g_off), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5 * scale)
    # The step draws what was drawn here (its key use), and reports the prior loss at w = 0.
    _, metrics = jax.jit(on.train_step)(state, BATCH, rng)
    for k in ("loss", "loss_prior"):
        assert float(metrics[k]) == pytest.approx(float(m_on[k]), rel=1e-5), k


def leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


@pytest.mark.slow  # three short engine runs of the LoRA step
def test_resume_with_prior_is_exact(tmp_path):
    """Straight 6 steps vs 3 steps then a resumed run to 6: equal bit for bit, the prior latents
    included (they come back from the checkpoint, not from a second sampling)."""
    from jaxsynth.commands.train import training_data
    from jaxsynth.train.loop import train

    def run(workdir, steps):
        cfg = smoke_config(ON, f"--config.num_steps={steps}", "--config.checkpoint_every=3")
        task = ft.make_task(cfg)
        data = training_data(cfg, workdir)
        task.prepare(data.arrays["image"], data.arrays["label"])
        return train(cfg, workdir, data, task=task)

    straight = run(tmp_path / "a", 6)
    assert run(tmp_path / "b", 3).step == 3
    resumed = run(tmp_path / "b", 6)
    assert resumed.resumed_from == 3 and resumed.step == 6
    a, b = leaves(straight.state), leaves(resumed.state)
    assert len(a) == len(b) > 100
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), "resumed run differs"
    records = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_prior" in r and "loss_instance" in r for r in records)  # the TB metrics


# manual: three CLI processes (152 s here); the in-process resume test above checks the same
# exactness with the prior on, and tests/test_sd_finetune.py the CLI kill -9 path without it
@pytest.mark.manual
def test_cli_kill9_then_resume_with_prior_is_bitwise_identical(tmp_path):
    from jaxsynth.train.checkpoint import load_trained

    straight = finish(start_cli(tmp_path / "straight", ON))
    assert "prior latents" in straight  # the memory estimate's row
    killed = tmp_path / "killed"
    victim = start_cli(killed, ON, pause=0.5)
    deadline = time.time() + 900
    while not (killed / "checkpoints" / "4").is_dir():
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert "resuming from step" in finish(start_cli(killed, ON))
    (_, a, _, sa), (_, b, _, sb) = load_trained(tmp_path / "straight"), load_trained(killed)
    assert sa == sb == 8 and "prior" in a.models
    for x, y in zip(leaves(a), leaves(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), "resumed run differs"
    exported = Path("export/lora.msgpack")
    assert (tmp_path / "straight" / exported).read_bytes() == (killed / exported).read_bytes()


def test_study_sd_ft_takes_prior_preservation_from_its_config():
    """`--config.gen.sd_ft.sd_ft.prior_preservation=True` reaches the study's fine-tuning Task
    (no study code involved) and is part of the training stage's cache key (`gen.sd_ft`)."""
    from types import SimpleNamespace

    from jaxsynth.config import load_config
    from jaxsynth.study.generators import ADAPTERS

    repo = Path(__file__).resolve().parent.parent
    cfg = load_config(
        str(repo / "configs" / "rare_tumour.py") + ":smoke",
        [
            "--config.generators=('sd_ft',)",
            f"--config.sd.model_path={repo / 'tests' / 'fixtures' / 'sd_pt' / 'pipeline'}",
            "--config.gen.sd_ft.sd_ft.prior_preservation=True",
        ],
    )
    adapter = ADAPTERS["sd_ft"]
    task = ft.make_task(adapter.config(SimpleNamespace(config=cfg), "sd_ft", 0))
    assert task.prior_label == task.num_classes + 1
    assert task.config.sd_ft.num_class_images == 8  # the smoke variant's
    assert task.config.data.train_classes == ("tumour",)
    assert "gen.sd_ft" in adapter.train_keys("sd_ft")


@pytest.mark.manual  # two 60-step full fine-tunings of the micro SD (minutes on this CPU)
def test_prior_preservation_keeps_the_prior_prompt_near_the_base_model(tmp_path):
    """The functional point of DreamBooth's prior term, on the phantom: fine-tune the micro SD
    (full) on the training tumour tiles with and without prior preservation, then sample the
    prior prompt from held-out noise. With the prior term the samples stay closer to the base
    model's samples of the same noise (less drift), while the held-out tumour eps-MSE still
    drops. Prints the numbers for docs/sd_finetune.md; not a quality claim (random stand-in)."""
    from jaxsynth.commands.train import training_data
    from jaxsynth.data.split import load_or_build_split
    from jaxsynth.train.loop import train

    common = ["--config.num_steps=60", "--config.checkpoint_every=60",
              "--config.sd_ft.num_class_images=32"]  # fmt: skip
    tasks, states = {}, {}
    for on in (False, True):
        cfg = smoke_config(*common, *([ON] if on else []), variant="smoke,tumour,full")
        task = ft.make_task(cfg)
        data = training_data(cfg, tmp_path)
        task.prepare(data.arrays["image"], data.arrays["label"])
        tasks[on], states[on] = task, train(cfg, tmp_path / f"run_{on}", data, task=task).state
    task = tasks[True]
    split = load_or_build_split(task.config, tmp_path)
    tumour = split.label_of("tumour")
    held = np.concatenate([s.of_classes([tumour]).images for s in (split.val, split.test)])
    x = jnp.asarray(held.astype(np.float32) / 127.5 - 1.0)
    y = jnp.full((len(held),), tumour, jnp.int32)
    emb = task.prompt_embeddings(task.sd.params["text_encoder"])
    noise = jax.random.normal(jax.random.PRNGKey(123), (16, 4, 4, 4))  # not the prior's key
    labels = jnp.full((16,), task.prior_label, jnp.int32)
    sample = jax.jit(lambda unet: task._ddim(unet, emb, noise, labels, 10, 7.5))
    base_unet = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), task.sd.params["unet"])
    base = np.asarray(sample(base_unet))
    drift = {on: float(np.mean((np.asarray(sample(states[on]["unet"].params["unet"])) - base) ** 2))
             for on in (False, True)}  # fmt: skip
    loss = jax.jit(lambda st: task.heldout_loss(st, x, y))
    init = jax.jit(task.init)(jax.random.PRNGKey(0), BATCH)
    heldout = {"base": float(loss(init)), **{on: float(loss(states[on])) for on in (False, True)}}
    print(f"prior-prompt drift (MSE of samples to the base model's): off {drift[False]:.4f}, "
          f"on {drift[True]:.4f}; held-out tumour eps-MSE: base {heldout['base']:.4f}, "
          f"off {heldout[False]:.4f}, on {heldout[True]:.4f}")  # fmt: skip
    assert drift[True] < drift[False]
    assert heldout[True] < 0.8 * heldout["base"]


# manual: the study's sd_ft stages end to end (LoRA step compile, classifier, samplers); the
# override reaching the task is a fast test above, the stages themselves test_sd_finetune's
@pytest.mark.manual
def test_study_sd_ft_generator_trains_with_prior_preservation(tmp_path):
    """`jaxsynth run ... --config.gen.sd_ft.sd_ft.prior_preservation=True`: the study's training
    stage runs the prior term (its metrics carry `loss_prior`, its checkpoint the prior
    latents) and the sample stage samples the result through the memorisation filter."""
    from jaxsynth.config import load_config
    from jaxsynth.study.rare_tumour import foundation_stages, run_stages
    from jaxsynth.train.checkpoint import load_trained

    repo = Path(__file__).resolve().parent.parent
    cfg = load_config(
        str(repo / "configs" / "rare_tumour.py") + ":smoke",
        [
            "--config.generators=('sd_ft',)",
            f"--config.sd.model_path={repo / 'tests' / 'fixtures' / 'sd_pt' / 'pipeline'}",
            "--config.sd.size=16",
            "--config.sd.steps=2",
            "--config.sd.num=2",
            "--config.synthetic.num=6",
            "--config.gen.sd_ft.num_steps=4",
            "--config.gen.sd_ft.sampler.steps=2",
            "--config.gen.sd_ft.sd_ft.prior_preservation=True",
            "--config.classifier.seeds=(0,)",
            "--config.study.generator_seeds=(0,)",
        ],
    )
    results = run_stages(foundation_stages(cfg), cfg, tmp_path)
    trained = results["gen_sd_ft_g0"]
    assert trained["steps"] == 4 and trained["train_images"] == 24
    (gen_dir,) = tmp_path.glob("stages/gen_sd_ft_g0-*")
    lines = (gen_dir / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [r for r in map(json.loads, lines) if "loss" in r]
    assert losses[-1]["step"] == 4 and losses[-1]["loss_prior"] > 0
    assert losses[-1]["loss"] == pytest.approx(
        losses[-1]["loss_instance"] + losses[-1]["loss_prior"], rel=1e-5
    )
    _, state, _, _ = load_trained(gen_dir / "run")
    assert state["prior"].params["latents"].shape == (8, 2, 2, 4)  # smoke: 8 samples, 16 px
    assert results["synth_sd_ft_g0"]["generated"] == 6
