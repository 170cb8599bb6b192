"""A tiny random Stable Diffusion pipeline folder, built offline in seconds.

Why: the tests, the bench and the study's smoke run need a real diffusers SD folder (same layout,
same loader, same pmap sampler as SD v1.5) without downloading 4 GB of weights. Every component is
the real class at toy width: a 2-level `FlaxUNet2DConditionModel` (block_out_channels (32, 64)),
a 4-level `FlaxAutoencoderKL` (so the latent factor is 8, as in SD), a 2-layer `FlaxCLIPTextModel`,
a `CLIPTokenizer` written from a small character-level vocab, and SD v1.5's DDIM scheduler config.

Parameters are NOT made by Flax's `init`: eager init of even this UNet takes 50-120 s on a 2-core
CPU and the jitted init spends ~60 s in XLA compilation (measured). Instead the
parameter shapes come from `jax.eval_shape(init)` (tracing only, ~2 s) and are filled from a numpy
generator: kernels ~ N(0, 1/fan_in) (variance-preserving, so activations stay O(1) through the
untrained network), embeddings ~ N(0, 0.02^2), norm scales 1, biases 0.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np

# Width of every tiny component; the CLIP hidden size is the UNet's cross-attention width.
TEXT_WIDTH = 32
MAX_TOKENS = 16  # tokenizer/text-model context (SD uses 77; 16 keeps the tiny encoder cheap)
LATENT_CHANNELS = 4
VAE_FACTOR = 8  # 2 ** (len(vae block_out_channels) - 1)

# SD v1.5's scheduler settings (scheduler/scheduler_config.json of the v1.5 repository).
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def _write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A character-level BPE vocabulary: every printable ASCII character, alone and word-final.

    CLIP's tokenizer maps each character through its byte->unicode table; printable ASCII maps to
    itself, so these entries cover any ASCII prompt. A handful of merges make it a real BPE.
    """
    chars = [c for c in string.ascii_lowercase + string.digits + string.punctuation]
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for c in chars:
        tokens += [c, c + "</w>"]
    merges = [("t", "h"), ("th", "e</w>"), ("i", "n"), ("a", "n"), ("e", "r")]
    tokens += ["th", "the</w>", "in", "an", "er"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab))
    merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab_file, merges_file


def _random_params(shapes, rng: np.random.Generator):
    """Fill a pytree of `ShapeDtypeStruct`s with float32 numpy values chosen by leaf name."""
    import jax

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        shape = tuple(leaf.shape)
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1])) or 1
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        elif name == "embedding":
            value = rng.normal(0.0, 0.02, shape)
        elif name == "scale":
            value = np.ones(shape)
        else:  # biases and anything else
            value = np.zeros(shape)
        return value.astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def build_tiny_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Flax SD pipeline to `path` (a diffusers folder); returns the path.

    Deterministic in `seed`. The folder loads with `FlaxStableDiffusionPipeline.from_pretrained`
    exactly as a real SD v1.5 Flax checkpoint does (`jaxsynth.sd.pipeline.load_pipeline`).
    """
    import jax

    from jaxsynth.errors import require_extra

    require_extra("sd", "the tiny Stable Diffusion pipeline")
    from diffusers import (
        FlaxAutoencoderKL,
        FlaxDDIMScheduler,
        FlaxStableDiffusionPipeline,
        FlaxUNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTokenizer, FlaxCLIPTextModel

    from jaxsynth.sd.pipeline import quiet_hf_logging

    quiet_hf_logging()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    key_unet = key_vae = key_text = jax.random.PRNGKey(0)  # shapes only: eval_shape never runs it

    unet = FlaxUNet2DConditionModel(
        sample_size=8,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=TEXT_WIDTH,
    )
    unet_params = _random_params(jax.eval_shape(unet.init_weights, key_unet), rng)

    vae = FlaxAutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=64,
    )
    vae_params = _random_params(jax.eval_shape(vae.init_weights, key_vae), rng)

    vocab_file, merges_file = _write_tokenizer_files(path / "_vocab_src")
    tokenizer = CLIPTokenizer(
        str(vocab_file),
        str(merges_file),
        model_max_length=MAX_TOKENS,
        pad_token="<|endoftext|>",
    )
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = FlaxCLIPTextModel(text_config, _do_init=False)
    text_shapes = jax.eval_shape(lambda k: text_encoder.init_weights(k, (1, MAX_TOKENS)), key_text)
    text_params = _random_params(text_shapes, rng)

    scheduler = FlaxDDIMScheduler(**SD15_SCHEDULER)
    pipe = FlaxStableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
    )
    params = {"unet": unet_params, "vae": vae_params, "text_encoder": text_params}
    pipe.save_pretrained(str(path), params=params)
    for f in (vocab_file, merges_file):
        f.unlink()
    (path / "_vocab_src").rmdir()
    return path
