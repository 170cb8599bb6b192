"""Load a local Stable Diffusion folder into diffusers' Flax pipeline and draw images from it.

Why this shape:
- Weights come from a local diffusers folder only (`local_files_only=True`); nothing is
  downloaded at run time. Flax weights load directly; PyTorch `.safetensors` / `.bin` weights are
  mapped onto the Flax modules without torch (`jaxsynth.sd.weights`).
- diffusers' Flax SD pipeline is only end-to-end compiled through its `jit=True` path, which is a
  `pmap` over the local devices (the one place jaxsynth uses pmap). Params are replicated once
  and the same compiled sampler is reused for every batch: all batches have the same shapes
  (the last one is padded), so nothing recompiles.
- Determinism independent of the device layout: the pipeline would draw each device's latents
  from one key per device, so the images would depend on the device count. Instead the initial
  latents of image `i` are drawn here from `fold_in(key(seed), i)` and passed in as `latents`;
  the pipeline's own `prng_seed` is then unused. Each image is also always at the same position of
  the same per-device batch shape, whatever the number of devices, so the arithmetic is the same.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaxsynth.errors import UserError, require_extra
from jaxsynth.sd.hf import quiet_hf_logging  # noqa: F401  (re-exported)

SCHEDULERS = ("ddim", "pndm", "dpm")
DTYPES = ("float32", "bfloat16")
VAE_MULTIPLE = 8  # SD's VAE downsamples by 8; the Flax pipeline also requires multiples of 8

# Text-to-image pipeline classes we can load (model_index.json `_class_name`).
TEXT_TO_IMAGE_CLASSES = ("StableDiffusionPipeline", "FlaxStableDiffusionPipeline")

# Weight files per component: Flax, then the PyTorch file diffusers/transformers convert from.
_FLAX_WEIGHTS = {
    "unet": "diffusion_flax_model.msgpack",
    "vae": "diffusion_flax_model.msgpack",
    "text_encoder": "flax_model.msgpack",
}
_TORCH_WEIGHTS = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}


def check_model_folder(model_path: str | Path) -> bool:
    """Validate a local SD folder before loading; returns True if it needs `from_pt` conversion.

    Raises `UserError` naming the file or field at fault. Cheap: only PyTorch files' headers
    are read (they are mapped onto the Flax modules without torch, `jaxsynth.sd.weights`).
    """
    require_extra("sd", "Stable Diffusion")
    root = Path(model_path)
    if not root.exists():
        raise UserError(f"--model {root}: folder not found")
    if not root.is_dir():
        raise UserError(f"--model {root}: not a folder (expected a diffusers pipeline folder)")
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise UserError(f"--model {root}: no model_index.json (not a diffusers pipeline folder)")
    try:
        index = json.loads(index_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{index_file}: not valid JSON ({e})") from None
    class_name = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    if not class_name:
        raise UserError(f"{index_file}: no _class_name (not a diffusers pipeline index)")
    base_name = class_name.removeprefix("Flax")
    if class_name not in TEXT_TO_IMAGE_CLASSES:
        import diffusers

        if not hasattr(diffusers, "Flax" + base_name):
            raise UserError(
                f"{index_file}: _class_name {class_name!r} is a PyTorch-only pipeline "
                f"(diffusers has no Flax{base_name}); jaxsynth needs a StableDiffusionPipeline"
            )
        raise UserError(
            f"{index_file}: _class_name {class_name!r} is not a text-to-image Stable Diffusion "
            "pipeline; jaxsynth needs a StableDiffusionPipeline"
        )
    missing = [
        c for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if c not in index
    ]
    if missing:
        raise UserError(f"{index_file}: missing component(s) {', '.join(missing)}")

    needs_conversion = []
    for component, flax_file in _FLAX_WEIGHTS.items():
        folder = root / component
        if (folder / flax_file).is_file():
            continue
        torch_files = [f for f in _TORCH_WEIGHTS[component] if (folder / f).is_file()]
        if not torch_files:
            raise UserError(
                f"--model {root}: {component}/ has neither Flax weights ({flax_file}) nor "
                f"PyTorch weights ({' or '.join(_TORCH_WEIGHTS[component])})"
            )
        needs_conversion.append(component)
    if needs_conversion and len(needs_conversion) < len(_FLAX_WEIGHTS):
        raise UserError(
            f"--model {root}: only {', '.join(needs_conversion)} lack Flax weights; a folder must "
            "be all-Flax or all-PyTorch"
        )
    if needs_conversion:
        from jaxsynth.sd.weights import check_weights_header, weight_file

        for component in needs_conversion:
            check_weights_header(weight_file(root, component))
    return bool(needs_conversion)


def make_scheduler(model_path: str | Path, name: str):
    """The Flax scheduler `name` built from the folder's scheduler config, and its state.

    PNDM is built with `skip_prk_steps=True` (as SD v1.5 ships it: PLMS steps only).
    """
    from diffusers import (
        FlaxDDIMScheduler,
        FlaxDPMSolverMultistepScheduler,
        FlaxPNDMScheduler,
    )

    classes = {
        "ddim": (FlaxDDIMScheduler, {}),
        "pndm": (FlaxPNDMScheduler, {"skip_prk_steps": True}),
        "dpm": (FlaxDPMSolverMultistepScheduler, {}),
    }
    if name not in classes:
        raise UserError(f"--scheduler {name}: unknown (choose from {', '.join(SCHEDULERS)})")
    cls, overrides = classes[name]
    config_file = Path(model_path) / "scheduler" / "scheduler_config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{config_file}: cannot read the scheduler config ({e})") from None
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    scheduler = cls.from_config({**config, **overrides})
    if isinstance(scheduler, tuple):  # some diffusers versions return (scheduler, state)
        scheduler = scheduler[0]
    return scheduler, scheduler.create_state()


def _replicate(tree: Any, devices: list) -> Any:
    """Stack every leaf over `devices` (leading axis), one host->device copy per device, for pmap.

    Unlike `flax.jax_utils.replicate` this never materialises the stacked copy on one device
    (for SD v1.5 that would be n_devices x 4 GB on device 0).
    """
    import jax

    mesh = jax.sharding.Mesh(np.array(devices), ("devices",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices"))

    def rep(x):
        host = np.asarray(x)[None]
        shards = [jax.device_put(host, d) for d in devices]
        return jax.make_array_from_single_device_arrays(
            (len(devices), *host.shape[1:]), sharding, shards
        )

    return jax.tree.map(rep, tree)


def _cast_floats(tree: Any, dtype) -> Any:
    """Cast floating leaves to `dtype` on the host (diffusers' `to_bf16` uses the removed
    `jax.tree_map`; casting numpy leaves avoids one jitted op per leaf)."""
    import jax

    def cast(x):
        x = np.asarray(x)
        return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) and x.dtype != dtype else x

    return jax.tree.map(cast, tree)


@dataclass
class LoadedPipeline:
    """A Flax SD pipeline with its params replicated over the local devices (loaded once)."""

    pipe: Any  # FlaxStableDiffusionPipeline
    params: Any  # replicated: every leaf has a leading n_devices axis
    model_path: str
    scheduler: str
    dtype: str
    devices: list = field(default_factory=list)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.unet.config.in_channels)


# The last pipeline loaded in this process, keyed by what it was loaded from (see load_pipeline).
_LAST_LOADED: dict = {}


def _folder_fingerprint(root: Path) -> tuple:
    """(name, size, mtime) of every file under `root`: changes when the weights change."""
    return tuple(
        (str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in sorted(root.rglob("*"))
        if f.is_file()
    )


def load_pipeline(
    model_path: str | Path,
    *,
    scheduler: str = "ddim",
    dtype: str = "float32",
    reuse: bool = True,
    unet_dir: str | None = None,
    lora_dir: str | None = None,
) -> LoadedPipeline:
    """Load `model_path` (local diffusers SD folder) once and replicate its params on all devices.

    `unet_dir` / `lora_dir` (exports of `jaxsynth sd finetune`, see `jaxsynth.sd.finetune`)
    replace the U-Net with a fine-tuned one / merge LoRA adapters into it.

    `dtype` is the compute and parameter dtype of the UNet, VAE and text encoder ("bfloat16"
    halves memory and is the usual choice on GPU/TPU; the scheduler always stays float32).
    With `reuse` the last loaded pipeline is returned again when the folder (file names, sizes,
    mtimes), scheduler, dtype and devices are unchanged: the study samples several prompts from
    one checkpoint, and reusing the same pipeline object also reuses its compiled sampler (the
    pmap cache is keyed on the pipeline object). Only one pipeline is kept.
    """
    import jax
    import jax.numpy as jnp

    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: unknown (choose from {', '.join(DTYPES)})")
    from_pt = check_model_folder(model_path)
    root = Path(model_path).resolve()
    extra = tuple(
        (str(Path(d).resolve()), _folder_fingerprint(Path(d))) if d else None
        for d in (unet_dir, lora_dir)
    )
    key = (str(root), _folder_fingerprint(root), scheduler, dtype, tuple(jax.local_devices()))
    key = key + extra
    if reuse and _LAST_LOADED.get("key") == key:
        return _LAST_LOADED["loaded"]
    if reuse:
        _LAST_LOADED.clear()  # drop the old params before loading new ones
    quiet_hf_logging()
    from diffusers import FlaxStableDiffusionPipeline

    sched, sched_state = make_scheduler(model_path, scheduler)
    jdtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    if from_pt:  # PyTorch files: our torch-free mapping onto modules built from the configs
        from jaxsynth.sd.weights import build_modules, load_sd_params

        modules, params = load_sd_params(model_path, build_modules(model_path, jdtype))
        pipe = FlaxStableDiffusionPipeline(
            vae=modules["vae"], text_encoder=modules["text_encoder"],
            tokenizer=modules["tokenizer"], unet=modules["unet"], scheduler=sched,
            safety_checker=None, feature_extractor=None,
        )  # fmt: skip
    else:
        try:
            # The folder's own scheduler is loaded and then replaced: passing ours here fails in
            # diffusers' class check when model_index.json names a PyTorch scheduler class.
            pipe, params = FlaxStableDiffusionPipeline.from_pretrained(
                str(model_path),
                safety_checker=None,
                feature_extractor=None,
                local_files_only=True,
                dtype=jdtype,
            )
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"--model {model_path}: cannot load the pipeline ({first})") from None
    pipe.register_modules(scheduler=sched)  # before any call: the pmap cache keys on `pipe`
    params = {k: v for k, v in params.items() if k in ("unet", "vae", "text_encoder")}
    if unet_dir or lora_dir:
        from jaxsynth.sd.overrides import unet_override

        params["unet"] = unet_override(params["unet"], unet_dir, lora_dir)
    params = _cast_floats(params, np.dtype(jdtype))
    params["scheduler"] = sched_state
    devices = list(jax.local_devices())
    loaded = LoadedPipeline(
        pipe=pipe,
        params=_replicate(params, devices),
        model_path=str(model_path),
        scheduler=scheduler,
        dtype=dtype,
        devices=devices,
    )
    if reuse:
        _LAST_LOADED.update(key=key, loaded=loaded)
    return loaded


def image_latents(seed: int, indices: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Initial latents (len(indices), C, h, w) float32; image i's come from fold_in(key(seed), i).

    A pure function of (seed, image index): independent of batch size and device count.
    """
    return np.asarray(
        _latents_fn()(np.uint32(seed), np.asarray(indices, dtype=np.uint32), tuple(shape))
    )


_LATENTS_FN: list = []


def _latents_fn():
    """The jitted latent draw, built once per process (a fresh closure would recompile)."""
    if not _LATENTS_FN:
        import functools

        import jax

        @functools.partial(jax.jit, static_argnums=2)
        def draw(seed, indices, shape):
            base = jax.random.key(seed)
            return jax.vmap(
                lambda i: jax.random.normal(jax.random.fold_in(base, i), shape, dtype="float32")
            )(indices)

        _LATENTS_FN.append(draw)
    return _LATENTS_FN[0]


def resize_images(images: np.ndarray, out_size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, out_size, out_size, 3) with PIL's antialiased Lanczos filter."""
    from PIL import Image

    if images.shape[1:3] == (out_size, out_size):
        return images
    return np.stack(
        [
            np.asarray(Image.fromarray(im).resize((out_size, out_size), Image.Resampling.LANCZOS))
            for im in images
        ]
    )


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] -> uint8 (round half away, as diffusers' numpy_to_pil)."""
    return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


class Sampler:
    """One compiled text-to-image sampler: fixed prompt, steps, guidance, size and batch shape."""

    def __init__(
        self,
        loaded: LoadedPipeline,
        *,
        prompt: str,
        negative_prompt: str = "",
        steps: int = 20,
        guidance: float = 7.5,
        size: int = 512,
        batch_per_device: int = 1,
    ):
        validate_sampling_args(steps=steps, size=size, batch_per_device=batch_per_device)
        if size % loaded.vae_scale_factor:
            raise UserError(
                f"--size {size}: must be a multiple of the VAE factor {loaded.vae_scale_factor}"
            )
        self.loaded = loaded
        self.steps, self.size, self.batch_per_device = int(steps), int(size), int(batch_per_device)
        self.guidance = float(guidance)
        n_dev = loaded.num_devices
        pipe = loaded.pipe
        shape = (n_dev, batch_per_device, -1)
        ids = pipe.prepare_inputs([prompt] * (n_dev * batch_per_device))
        neg_ids = pipe.prepare_inputs([negative_prompt] * (n_dev * batch_per_device))
        self._prompt_ids = np.asarray(ids).reshape(shape)
        self._neg_ids = np.asarray(neg_ids).reshape(shape)
        self._guidance = np.full((n_dev,), self.guidance, np.float32)
        self._unused_keys = np.zeros((n_dev, 2), np.uint32)  # latents are passed explicitly
        f = loaded.vae_scale_factor
        self.latent_shape = (loaded.latent_channels, size // f, size // f)

    @property
    def images_per_call(self) -> int:
        return self.loaded.num_devices * self.batch_per_device

    def __call__(self, seed: int, indices: np.ndarray) -> np.ndarray:
        """Images (len(indices), size, size, 3) float32 in [0, 1] for these image indices.

        `indices` may be shorter than `images_per_call`; the batch is padded with the following
        indices (drawn and discarded) so the compiled shapes never change.
        """
        indices = np.asarray(indices, np.int64)
        n = len(indices)
        per_call = self.images_per_call
        if not 0 < n <= per_call:
            raise ValueError(f"{n} indices for a sampler drawing {per_call} per call")
        padded = np.concatenate([indices, indices[-1] + 1 + np.arange(per_call - n)])
        latents = image_latents(seed, padded, self.latent_shape)
        latents = latents.reshape(
            self.loaded.num_devices, self.batch_per_device, *latents.shape[1:]
        )
        out = self.loaded.pipe(
            self._prompt_ids,
            self.loaded.params,
            self._unused_keys,
            num_inference_steps=self.steps,
            height=self.size,
            width=self.size,
            guidance_scale=self._guidance,
            latents=latents,
            neg_prompt_ids=self._neg_ids,
            jit=True,
        ).images
        out = np.asarray(out, np.float32).reshape(per_call, self.size, self.size, 3)
        return out[:n]


def validate_sampling_args(
    *,
    num: int | None = None,
    steps: int = 20,
    size: int = 512,
    out_size: int | None = None,
    batch_per_device: int = 1,
    num_devices: int | None = None,
    seed: int | None = None,
) -> None:
    """One-line `UserError`s for sampling arguments (checked before any weights are loaded)."""
    if seed is not None and not 0 <= seed < 2**32:
        raise UserError(f"--seed {seed}: must be in [0, 2**32)")
    if num is not None and num <= 0:
        raise UserError(f"--num {num}: must be a positive number of images")
    if steps <= 0:
        raise UserError(f"--steps {steps}: must be a positive number of denoising steps")
    if size <= 0 or size % VAE_MULTIPLE:
        raise UserError(
            f"--size {size}: must be a positive multiple of {VAE_MULTIPLE} (VAE factor)"
        )
    if out_size is not None and out_size <= 0:
        raise UserError(f"--out-size {out_size}: must be a positive number of pixels")
    if batch_per_device <= 0:
        raise UserError(f"--batch-per-device {batch_per_device}: must be positive")
    if num is not None and num_devices is not None and num < num_devices:
        raise UserError(
            f"--num {num}: fewer images than the {num_devices} local devices the batch is split "
            f"over; ask for at least {num_devices} images"
        )


class _Progress:
    """Throttled `images/s` and ETA lines on stderr (the first batch includes compilation)."""

    def __init__(self, total: int, enabled: bool, every_s: float = 2.0):
        self.total, self.enabled, self.every_s = total, enabled, every_s
        self.t0 = time.perf_counter()
        self.t_first: float | None = None  # end of the first (compiling) batch
        self.n_first = 0
        self.last_print = 0.0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first, self.n_first = now, done
            if self.enabled:
                print(
                    f"sd: {done}/{self.total} images, first batch (with compile) "
                    f"{now - self.t0:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            self.last_print = now
            return
        if not self.enabled or (now - self.last_print < self.every_s and done < self.total):
            return
        rate = (done - self.n_first) / max(now - self.t_first, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        print(
            f"sd: {done}/{self.total} images, {rate:.2f} img/s, ETA {eta:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        self.last_print = now

    @property
    def first_batch_s(self) -> float:
        return (self.t_first or time.perf_counter()) - self.t0

    def steady_images_per_s(self, done: int) -> float | None:
        if self.t_first is None or done <= self.n_first:
            return None
        return (done - self.n_first) / max(time.perf_counter() - self.t_first, 1e-9)


def sample_images(
    model_path: str | Path | None,
    *,
    prompt: str,
    negative_prompt: str = "",
    num: int,
    seed: int,
    steps: int = 20,
    guidance: float = 7.5,
    scheduler: str = "ddim",
    size: int = 512,
    out_size: int = 128,
    batch_per_device: int = 1,
    progress: bool = True,
    dtype: str = "float32",
    loaded: LoadedPipeline | None = None,
    on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None,
    stats: dict | None = None,
    unet_dir: str | None = None,
    lora_dir: str | None = None,
) -> np.ndarray:
    """Draw `num` images; returns uint8 (num, out_size, out_size, 3).

    Image i depends only on (model, prompts, steps, guidance, scheduler, size, seed, i). Pass
    `loaded` (from `load_pipeline`) to reuse already-loaded params; `on_batch(indices, images)` is
    called with each finished batch (uint8, resized); `stats` (a dict) receives timings.
    """
    import jax

    n_dev = loaded.num_devices if loaded is not None else jax.local_device_count()
    validate_sampling_args(
        num=num,
        steps=steps,
        size=size,
        out_size=out_size,
        batch_per_device=batch_per_device,
        num_devices=n_dev,
        seed=seed,
    )
    t_load = time.perf_counter()
    if loaded is None:
        loaded = load_pipeline(
            model_path, scheduler=scheduler, dtype=dtype, unet_dir=unet_dir, lora_dir=lora_dir
        )
    elif loaded.scheduler != scheduler:
        raise ValueError(f"loaded pipeline uses {loaded.scheduler!r}, asked for {scheduler!r}")
    load_s = time.perf_counter() - t_load
    # Never draw more than ~num images per call: with few images a smaller batch wastes less.
    batch_per_device = min(batch_per_device, math.ceil(num / n_dev))
    sampler = Sampler(
        loaded,
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        guidance=guidance,
        size=size,
        batch_per_device=batch_per_device,
    )
    out = np.zeros((num, out_size, out_size, 3), np.uint8)
    meter = _Progress(num, progress)
    for start in range(0, num, sampler.images_per_call):
        indices = np.arange(start, min(start + sampler.images_per_call, num))
        batch = resize_images(to_uint8(sampler(seed, indices)), out_size)
        out[indices] = batch
        if on_batch is not None:
            on_batch(indices, batch)
        meter.update(int(indices[-1]) + 1)
    if stats is not None:
        stats.update(
            load_s=load_s,
            first_batch_s=meter.first_batch_s,
            steady_images_per_s=meter.steady_images_per_s(num),
            total_s=time.perf_counter() - t_load,
            num_devices=n_dev,
            batch_per_device=batch_per_device,
        )
    return out
