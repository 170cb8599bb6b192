"""Memory of SD v1.5 fine-tuning (full U-Net vs LoRA) at 256 and 512 px, computed, not measured.

    python bench/sd_finetune_memory.py [--json out.json] [--activations]

The parameter trees are SD v1.5's exact shapes (its public unet/vae/text_encoder configs, built
with `jax.eval_shape`: no weights, no download). The static rows are those
`jaxsynth sd finetune` prints before a run (`jaxsynth.sd.finetune.memory_rows`): float32
trainable params, gradients, Adam moments, EMA copy; frozen params in float16 (as the
"fp16" files are usually downloaded; float32 doubles that row); the latent cache of 80 tumour
tiles in 8 flips. `--activations` adds XLA's temporary-buffer size of one compiled train step
(batch 1, float32, this backend's compiler: on CPU this is an upper-bound guide, GPU fusion
differs) — it compiles the full SD U-Net's backward pass, minutes on a small CPU.
"""

from __future__ import annotations

import argparse
import json

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768,
)  # fmt: skip
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), sample_size=512,
)  # fmt: skip
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77,
)  # fmt: skip
TILES = 80  # the study's rare training split: 80 tumour tiles


def sd15_shapes(dtype="float16"):
    import jax
    import jax.numpy as jnp
    from diffusers import FlaxAutoencoderKL, FlaxUNet2DConditionModel
    from transformers import CLIPTextConfig, FlaxCLIPTextModel

    from jaxsynth.sd.pipeline import quiet_hf_logging

    quiet_hf_logging()
    key = jax.random.PRNGKey(0)
    unet = FlaxUNet2DConditionModel(**SD15_UNET)
    vae = FlaxAutoencoderKL(**SD15_VAE)
    text = FlaxCLIPTextModel(CLIPTextConfig(**SD15_TEXT), _do_init=False)

    def as_(tree):
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.dtype(dtype)), tree)

    shapes = {
        "unet": as_(jax.eval_shape(unet.init_weights, key)),
        "vae": as_(jax.eval_shape(vae.init_weights, key)),
        "text_encoder": as_(jax.eval_shape(lambda k: text.init_weights(k, (1, 77)), key)),
    }
    return unet, shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the table here as JSON")
    ap.add_argument("--activations", action="store_true", help="add XLA's compiled temp size")
    args = ap.parse_args()
    import numpy as np

    from jaxsynth.models.lora import count
    from jaxsynth.sd.finetune import memory_rows

    unet, shapes = sd15_shapes()
    counts = {k: count(v) for k, v in shapes.items()}
    print("SD v1.5 parameters: " + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in counts.items()))
    results = []
    for px in (256, 512):
        latent = px // 8
        cache = TILES * 8 * latent * latent * 4 * 2 * 4
        for mode, rank in (("full", 0), ("lora", 4)):
            rows = memory_rows(
                shapes["unet"], shapes["vae"], shapes["text_encoder"], mode, rank,
                cache_bytes=cache,
            )  # fmt: skip
            rec = {"px": px, "mode": mode if mode == "full" else f"lora r{rank}"}
            rec.update({name: b for name, b in rows})
            rec["static_total"] = sum(b for _, b in rows)
            if args.activations:
                rec["xla_temp_batch1"] = _activations(unet, shapes["unet"], latent)
            results.append(rec)
    cols = ["trainable params (float32)", "Adam moments", "static_total"]
    print(
        f"| px | mode | {' | '.join(cols)} |" + (" XLA temp, batch 1 |" if args.activations else "")
    )
    print("|---" * (len(cols) + 2 + args.activations) + "|")
    for r in results:
        cells = [f"{r[c] / 2**20:,.0f} MiB" for c in cols]
        act = f" {r['xla_temp_batch1'] / 2**20:,.0f} MiB |" if args.activations else ""
        print(f"| {r['px']} | {r['mode']} | {' | '.join(cells)} |{act}")
    if args.json:
        out = {"param_counts": counts, "tiles_cached": TILES, "rows": results}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=lambda o: int(np.asarray(o)))


def _activations(unet, unet_shapes, latent: int) -> int:
    """XLA temp bytes of value_and_grad of the eps loss through the full U-Net, batch 1."""
    import jax
    import jax.numpy as jnp

    f32 = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float32), unet_shapes)

    def loss(p, x, ctx):
        out = unet.apply({"params": p}, x, jnp.array([500]), ctx).sample
        return jnp.mean(jnp.square(out - x))

    x = jax.ShapeDtypeStruct((1, 4, latent, latent), jnp.float32)
    ctx = jax.ShapeDtypeStruct((1, 77, 768), jnp.float32)
    compiled = jax.jit(jax.value_and_grad(loss)).lower(f32, x, ctx).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


if __name__ == "__main__":
    main()
