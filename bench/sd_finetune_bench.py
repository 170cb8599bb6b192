"""Stable Diffusion fine-tuning throughput: our Task's step next to diffusers' Flax example's.

Three rows on the same U-Net, VAE, text encoder and batch (full U-Net fine-tuning, float32):

* `jaxsynth, cached latents`: `SdFinetuneTask.train_step` (jitted, state donated) as
  `jaxsynth sd finetune` runs it: the batch's latents come from the latent cache (every tile
  encoded once by `prepare`, in 8 flips); the one-off cache build is timed separately.
* `jaxsynth, VAE per step`: the same step with no cache (as `jaxsynth train --config
  configs/sd_finetune.py` runs it): each step encodes its image batch with the frozen VAE. This is
  the same work per step as the diffusers row.
* `diffusers example step`: a re-implementation (not a copy) of the training step of diffusers'
  `examples/text_to_image/train_text_to_image_flax.py` (read at huggingface/diffusers
  000280f56a6a; the script is unchanged in the 0.39 line): `jax.pmap` over the local devices,
  per step the VAE posterior sampled from the images, the text encoder run on the batch's
  token ids, uniform timesteps, noise added by `FlaxDDPMScheduler`, the U-Net, plain ε-MSE,
  `pmean` of the gradients, `optax.chain(clip_by_global_norm(1), adamw(1e-4, eps 1e-8, wd 1e-2))`.

Both sides get device-resident batches (host loading is not timed; the script's torch loader
and `shard` per step are left out, as are our engine's loader and prefetch). Our step does a
little more than the example's: Min-SNR weighting, prompt dropout, the EMA update
(`sd_ft.ema_decay`), embeddings of the class prompts instead of one per image.

Default: the micro SD fixture (`tests/fixtures/sd_pt/pipeline`: SD v1.5's layout at 32
channels) at 32 px, which measures the machinery on a CPU; `--model` a real SD folder. On a GPU:

    python bench/sd_finetune_bench.py --model ~/models/sd-v1-5-pt --size 256 --batch 8 --steps 20

Prints a table and writes `bench/results/sd_finetune_bench.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from jaxsynth import xla_flags  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "sd_pt" / "pipeline"
DIFFUSERS_SCRIPT = (
    "huggingface/diffusers@000280f56a6a examples/text_to_image/train_text_to_image_flax.py"
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="local SD folder (default: the micro test fixture)")
    p.add_argument("--size", type=int, default=32, help="image size in px (multiple of 8)")
    p.add_argument("--batch", type=int, default=8, help="global batch (divisible by devices)")
    p.add_argument(
        "--steps", type=int, default=5, help="timed steps per row (after 2 warm-up steps)"
    )
    p.add_argument("--tiles", type=int, default=32, help="training tiles in the latent cache")
    p.add_argument("--rows", default="cached,per_step,diffusers", help="which rows, in order")
    p.add_argument("--out", default=str(HERE / "results" / "sd_finetune_bench.json"))
    return p.parse_args()


COMPILE_S = [0.0]  # XLA backend compile seconds so far (jax.monitoring)


def _on_event(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILE_S[0] += duration


def timed_loop(step, carry, batches, keys, n: int):
    """(compile + first step seconds, seconds per step over `n` steps after two warm-up steps,
    last loss). The second warm-up step absorbs a recompile when the step's output state is
    placed differently from the initial state."""
    import jax

    t0 = time.perf_counter()
    carry, loss = step(carry, batches[0], keys[0])
    jax.block_until_ready(loss)
    first = time.perf_counter() - t0
    carry, loss = step(carry, batches[1 % len(batches)], keys[1])
    jax.block_until_ready(loss)
    compiled_before = COMPILE_S[0]
    t0 = time.perf_counter()
    for i in range(2, n + 2):
        carry, loss = step(carry, batches[i % len(batches)], keys[i])
    jax.block_until_ready(loss)
    per_step = (time.perf_counter() - t0) / n
    if COMPILE_S[0] > compiled_before:  # the timed steps must not include a compile
        raise SystemExit(f"recompiled during the timed steps ({COMPILE_S[0] - compiled_before} s)")
    return first, per_step, float(jax.device_get(loss).reshape(-1)[0])


def ours(args, model: str, cached: bool, images, labels, device_batches, keys):
    """Our Task's jitted step, full U-Net fine-tuning (`configs/sd_finetune.py:full`)."""
    import jax

    from jaxsynth.config import load_config
    from jaxsynth.sd import finetune as ft

    cfg = load_config(
        str(REPO / "configs" / "sd_finetune.py") + ":full",
        [
            f"--config.sd_ft.model_path={model}",
            f"--config.image_size={args.size}",
            f"--config.batch_size={args.batch}",
            f"--config.sd_ft.cache_latents={str(cached).lower()}",
        ],
    )
    task = ft.make_task(cfg)
    t0 = time.perf_counter()
    task.prepare(images, labels)
    if task.cache is not None:
        jax.block_until_ready(task.cache["mean"])
    prepare_s = time.perf_counter() - t0 if cached else 0.0
    state = jax.jit(task.init)(jax.random.PRNGKey(0), device_batches[0])
    train_step = jax.jit(task.train_step, donate_argnums=0)

    def step(state, batch, key):
        state, metrics = train_step(state, batch, key)
        return state, metrics["loss"]

    first, per_step, loss = timed_loop(step, state, device_batches, keys, args.steps)
    return {"prepare_s": round(prepare_s, 3), "first_call_s": first, "s_per_step": per_step,
            "last_loss": loss}  # fmt: skip


def diffusers_example(args, model: str, images, labels):
    """The example script's training step, re-implemented on the same modules and weights."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from diffusers import FlaxDDPMScheduler
    from flax import jax_utils
    from flax.training import train_state

    from jaxsynth.sd import finetune as ft

    modules, params, _ = ft.load_sd(model)
    unet, vae, text_encoder, tok = (
        modules[k] for k in ("unet", "vae", "text_encoder", "tokenizer")
    )
    f32 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)  # noqa: E731
    n_dev = jax.local_device_count()
    if args.batch % n_dev:
        raise SystemExit(f"--batch {args.batch}: not divisible by {n_dev} devices")

    # The script's defaults: lr 1e-4 constant, Adam b1 0.9 b2 0.999 eps 1e-8, wd 1e-2, clip 1.
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(optax.constant_schedule(1e-4), b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2),
    )
    state = train_state.TrainState.create(apply_fn=unet.__call__, params=f32(params["unet"]), tx=tx)
    scheduler = FlaxDDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )
    sched_state = scheduler.create_state()
    scaling = vae.config.scaling_factor

    def step(state, text_params, vae_params, batch, rng):
        sample_rng, next_rng = jax.random.split(rng)

        def loss_fn(unet_params):
            post = vae.apply(
                {"params": vae_params}, batch["pixel_values"], deterministic=True,
                method=vae.encode,
            ).latent_dist  # fmt: skip
            z = jnp.transpose(post.sample(sample_rng), (0, 3, 1, 2)) * scaling  # NHWC -> NCHW
            k_noise, k_t = jax.random.split(sample_rng)
            noise = jax.random.normal(k_noise, z.shape)
            t = jax.random.randint(k_t, (z.shape[0],), 0, scheduler.config.num_train_timesteps)
            z_t = scheduler.add_noise(sched_state, z, noise, t)
            ctx = text_encoder(batch["input_ids"], params=text_params, train=False)[0]
            pred = unet.apply({"params": unet_params}, z_t, t, ctx, train=True).sample
            return jnp.mean((noise - pred) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        grads = jax.lax.pmean(grads, "batch")
        return state.apply_gradients(grads=grads), jax.lax.pmean(loss, "batch"), next_rng

    p_step = jax.pmap(step, "batch", donate_argnums=(0,))
    state = jax_utils.replicate(state)
    text_params = jax_utils.replicate(f32(params["text_encoder"]))
    vae_params = jax_utils.replicate(f32(params["vae"]))
    prompts = [
        "H&E histopathology tile, normal tissue",
        "H&E histopathology tile, metastatic tumour",
    ]

    def shard(x):
        return x.reshape(n_dev, x.shape[0] // n_dev, *x.shape[1:])

    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("batch",))
    per_device = jax.NamedSharding(mesh, jax.P("batch"))  # leading axis = device
    batches = []
    for i in range(2):  # the script: NCHW pixels in [-1, 1], ids padded to model_max_length
        sel = np.arange(i * args.batch, (i + 1) * args.batch) % len(images)
        px = np.transpose(images[sel].astype(np.float32) / 127.5 - 1.0, (0, 3, 1, 2))
        ids = tok(
            [prompts[int(lb)] for lb in labels[sel]],
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="np",
        ).input_ids
        batch = {"pixel_values": shard(px), "input_ids": shard(np.asarray(ids))}
        batches.append(jax.device_put(batch, per_device))  # what `shard` + pmap's transfer do
    rngs = jax.random.split(jax.random.PRNGKey(0), n_dev)

    def run(carry, batch, _key):
        state, rngs = carry
        state, loss, rngs = p_step(state, text_params, vae_params, batch, rngs)
        return (state, rngs), loss

    keys = [None] * (args.steps + 2)
    first, per_step, loss = timed_loop(run, (state, rngs), batches, keys, args.steps)
    return {"prepare_s": 0.0, "first_call_s": first, "s_per_step": per_step, "last_loss": loss}


def main() -> None:
    args = parse_args()
    xla_flags.apply()
    import diffusers
    import jax
    import numpy as np

    from jaxsynth.train.mesh import batch_sharding, make_mesh

    jax.monitoring.register_event_duration_secs_listener(_on_event)

    model = args.model or str(FIXTURE)
    model_name = str(Path(args.model).resolve()) if args.model else "micro SD fixture (tests)"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.tiles, args.size, args.size, 3), np.uint8)
    labels = (np.arange(args.tiles) % 2).astype(np.int32)
    sharding = batch_sharding(make_mesh())
    device_batches = []
    for i in range(2):
        sel = np.arange(i * args.batch, (i + 1) * args.batch) % args.tiles
        b = {"image": images[sel].astype(np.float32) / 127.5 - 1.0, "label": labels[sel]}
        device_batches.append(jax.device_put(b, sharding))
    keys = [jax.random.fold_in(jax.random.PRNGKey(1), i) for i in range(args.steps + 2)]

    what = {
        "cached": "jaxsynth, cached latents",
        "per_step": "jaxsynth, VAE per step",
        "diffusers": "diffusers example step",
    }
    rows = []
    for name in args.rows.split(","):
        if name == "diffusers":
            r = diffusers_example(args, model, images, labels)
        elif name in ("cached", "per_step"):
            r = ours(args, model, name == "cached", images, labels, device_batches, keys)
        else:
            raise SystemExit(f"--rows: unknown row '{name}' (cached, per_step, diffusers)")
        steps_s = 1.0 / r["s_per_step"]
        rows.append({
            "row": name, "what": what[name], "steps_per_s": round(steps_s, 3),
            "images_per_s": round(steps_s * args.batch, 2),
            "s_per_step": round(r["s_per_step"], 4),
            "first_call_s": round(r["first_call_s"], 2), "cache_build_s": r["prepare_s"],
            "last_loss": round(r["last_loss"], 4),
        })  # fmt: skip
        print(f"  {what[name]}: {steps_s:.3f} steps/s", flush=True)

    devices = f"{jax.local_device_count()} x {jax.devices()[0].device_kind}"
    print(f"\n{model_name}: full U-Net, {args.size} px, batch {args.batch}, {devices}")
    print(f"{'row':<28}{'steps/s':>9}{'img/s':>9}{'1st call s':>12}{'cache s':>9}")
    for r in rows:
        print(
            f"{r['what']:<28}{r['steps_per_s']:>9.3f}{r['images_per_s']:>9.2f}"
            f"{r['first_call_s']:>12.2f}{r['cache_build_s']:>9.2f}"
        )
    result = {
        "model": model_name,
        "mode": "full",
        "size": args.size,
        "batch": args.batch,
        "timed_steps": args.steps,
        "cache_tiles": args.tiles,
        "diffusers_reference": DIFFUSERS_SCRIPT,
        "devices": devices,
        "platform": jax.default_backend(),
        "host": {"machine": platform.machine(), "cpu_count": os.cpu_count()},
        "load_average_1m": os.getloadavg()[0],
        "versions": {"jax": jax.__version__, "diffusers": diffusers.__version__},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "rows": rows,
        "command": "python bench/sd_finetune_bench.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v and k != "out"
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
