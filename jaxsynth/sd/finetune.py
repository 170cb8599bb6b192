"""Stable Diffusion fine-tuning around the engine: load the folder, build the Task, estimate
memory, export the result, and load it back for sampling.

Why here and not in `jaxsynth.tasks.sd_finetune`: reading an SD folder (`jaxsynth.sd.weights`)
is an application-level job that sits above the tasks layer; the Task receives the loaded
modules and params (`SdModel`) and knows nothing about files. `config.task` therefore names
`jaxsynth.sd.finetune:make_task`.

Exports (`export`): `<out>/unet/diffusion_flax_model.msgpack` (full fine-tuning: the EMA U-Net,
loadable with `jaxsynth sd sample --unet <out>`), or `<out>/lora.msgpack` + `<out>/lora.json`
(rank, alpha, targets; `jaxsynth sd sample --lora <out>` merges it into the base U-Net).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxsynth.errors import UserError
from jaxsynth.models import lora as lora_lib
from jaxsynth.sd.overrides import LORA_FILE, LORA_META, UNET_FILE  # noqa: F401
from jaxsynth.tasks.sd_finetune import SdFinetuneTask, SdModel

# Loaded folders, keyed by path: the engine builds the task again to resume or sample.
_LOADED: dict[str, tuple] = {}


def load_sd(model_path: str | Path) -> tuple[dict, dict, dict]:
    """(modules, params, scheduler config) of a local SD folder (Flax or PyTorch weights)."""
    from jaxsynth.sd.pipeline import check_model_folder
    from jaxsynth.sd.weights import load_sd_params

    check_model_folder(model_path)
    key = str(Path(model_path).resolve())
    if key not in _LOADED:
        modules, params = load_sd_params(model_path)
        sched_file = Path(model_path) / "scheduler" / "scheduler_config.json"
        _LOADED.clear()
        _LOADED[key] = (modules, params, json.loads(sched_file.read_text()))
    return _LOADED[key]


def make_task(config: ml_collections.ConfigDict) -> SdFinetuneTask:
    """Factory named by `config.task = "jaxsynth.sd.finetune:make_task"`."""
    s = config.sd_ft
    if not s.model_path:
        raise UserError("sd_ft.model_path is empty: point it at a local Stable Diffusion folder")
    prompts = tuple(s.prompts)
    if len(prompts) != len(config.data.classes):
        raise UserError(
            f"sd_ft.prompts has {len(prompts)} prompt(s) but data.classes has "
            f"{len(config.data.classes)}: one prompt per class, in the same order"
        )
    modules, params, sched = load_sd(s.model_path)
    tok = modules["tokenizer"]
    # the empty prompt (guidance null) at row len(prompts); the prior prompt after it
    rows = [*prompts, "", *([s.prior_prompt] if s.prior_preservation else [])]
    ids = tok(
        rows, padding="max_length", max_length=tok.model_max_length,
        truncation=True, return_tensors="np",
    ).input_ids  # fmt: skip
    sd = SdModel(
        unet=modules["unet"],
        vae=modules["vae"],
        text_encoder=modules["text_encoder"],
        params=params,
        scheduler_config=sched,
        prompt_ids=np.asarray(ids, np.int32),
    )
    return SdFinetuneTask(config, sd)


def _nbytes(tree: Any, dtype=None) -> int:
    return int(
        sum(
            np.dtype(dtype or x.dtype).itemsize * int(np.prod(x.shape))
            for x in jax.tree.leaves(tree)
        )
    )


def memory_rows(
    unet: Any,
    vae: Any,
    text: Any,
    mode: str,
    rank: int,
    targets=lora_lib.ATTENTION_PROJECTIONS,
    cache_bytes: int = 0,
    prior_bytes: int = 0,
) -> list[tuple[str, int]]:
    """Device bytes a run holds, by item, from parameter trees (arrays or ShapeDtypeStructs):
    float32 trainable params, their gradients, Adam's two moments and the EMA copy; frozen
    params in their stored dtype; the latent cache; the prior-preservation latents (base-model
    samples, float32). Activations come on top (`activation_bytes`); prior preservation doubles
    the batch each step runs through the U-Net."""
    if mode == "lora":
        fits = lora_lib.lora_targets(unet, targets).values()
        trainable = 4 * sum(rank * (fin + fout) for fin, fout in fits)
        frozen, names = _nbytes(vae) + _nbytes(text) + _nbytes(unet), "VAE, text encoder, U-Net"
    else:
        trainable = _nbytes(unet, np.float32)
        frozen, names = _nbytes(vae) + _nbytes(text), "VAE, text encoder"
    rows = [
        ("trainable params (float32)", trainable),
        ("gradients", trainable),
        ("Adam moments", 2 * trainable),
        ("EMA copy", trainable),
        (f"frozen params ({names})", frozen),
    ]
    if cache_bytes:
        rows.append(("latent cache", cache_bytes))
    if prior_bytes:
        rows.append(("prior latents", prior_bytes))
    return rows


def memory_estimate(task: SdFinetuneTask, num_cached: int = 0) -> list[tuple[str, int]]:
    """`memory_rows` of this task (`num_cached` training tiles in the latent cache)."""
    s, p = task.config.sd_ft, task.sd.params
    flips = 8 if s.cache_flips else 1
    cache = num_cached * flips * task.latent_hw**2 * task.latent_c * 4 * 2  # mean, std float32
    prior = int(s.num_class_images) * task.latent_hw**2 * task.latent_c * 4
    return memory_rows(
        p["unet"],
        p["vae"],
        p["text_encoder"],
        s.mode,
        int(s.lora_rank),
        tuple(s.lora_targets),
        cache,
        prior if s.prior_preservation else 0,
    )


def activation_bytes(task: SdFinetuneTask, state, batch_size: int) -> int | None:
    """XLA's temporary-buffer size for one compiled train step (this backend), or None."""
    batch = {
        "image": jax.ShapeDtypeStruct(
            (batch_size, task.config.image_size, task.config.image_size, 3), np.float32
        ),
        "label": jax.ShapeDtypeStruct((batch_size,), np.int32),
    }
    try:
        compiled = jax.jit(task.train_step).lower(state, batch, jax.random.PRNGKey(0)).compile()
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # memory analysis is not offered by every backend
        return None


def format_memory(rows: list[tuple[str, int]]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"  {name:<{width}}  {b / 2**30:8.3f} GiB" for name, b in rows]
    total = sum(b for _, b in rows)
    return "\n".join(
        ["memory estimate (per device):", *lines, f"  {'total':<{width}}  {total / 2**30:8.3f} GiB"]
    )


def export(task: SdFinetuneTask, state, out: str | Path) -> Path:
    """Write the fine-tuned U-Net (full) or the LoRA adapters (lora) to `out`; returns `out`."""
    from flax.serialization import msgpack_serialize

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = state["unet"]
    trainable = jax.device_get(m.ema_params if m.ema_params else m.params)
    s = task.config.sd_ft
    if s.mode == "lora":
        (out / LORA_FILE).write_bytes(msgpack_serialize(trainable["lora"]))
        meta = {
            "rank": int(s.lora_rank),
            "alpha": float(s.lora_alpha),
            "targets": list(s.lora_targets),
            "base_model": str(Path(s.model_path).resolve()),
        }
        (out / LORA_META).write_text(json.dumps(meta, indent=2) + "\n")
    else:
        (out / UNET_FILE).parent.mkdir(parents=True, exist_ok=True)
        (out / UNET_FILE).write_bytes(msgpack_serialize(trainable["unet"]))
    return out
