"""`jaxsynth sd sample --model PATH --prompt "..." --num N --out DIR [...]`.

Draws N images from a local Stable Diffusion folder through diffusers' Flax pipeline (see
`jaxsynth.sd.pipeline`) and writes `DIR/sample_00000.png ...` (resized to `--out-size`),
`DIR/samples.npz` (uint8 `images` (N, S, S, 3)) and `DIR/samples.json` (every setting needed to
redraw the same images, and how each image's noise was derived).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jaxsynth.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sd", help="Stable Diffusion: sample, fine-tune (full or LoRA)")
    sd_sub = p.add_subparsers(dest="sd_command", metavar="SD_COMMAND")
    sd_sub.required = True
    s = sd_sub.add_parser("sample", help="draw images from a local SD folder")
    s.add_argument("--model", required=True, help="local diffusers SD pipeline folder")
    s.add_argument("--prompt", required=True, help="text prompt")
    s.add_argument("--negative-prompt", default="", help="negative prompt (default: none)")
    s.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    s.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default 7.5)")
    s.add_argument("--scheduler", choices=("ddim", "pndm", "dpm"), default="ddim")
    s.add_argument("--size", type=int, default=512, help="generated size in px (multiple of 8)")
    s.add_argument("--out-size", type=int, default=128, help="saved size in px (default 128)")
    s.add_argument("--num", type=int, required=True, help="number of images")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--seed", type=int, default=0, help="sampling seed")
    s.add_argument(
        "--batch-per-device", type=int, default=1, help="images per device per call (default 1)"
    )
    s.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.add_argument("--unet", help="fine-tuned U-Net (export folder of `jaxsynth sd finetune`)")
    s.add_argument("--lora", help="LoRA adapters to merge (export folder of `sd finetune`)")
    s.set_defaults(func=run, takes_config=False)
    f = sd_sub.add_parser("finetune", help="fine-tune SD's U-Net (full or LoRA) on the tiles")
    f.add_argument("--config", help="config file, e.g. configs/sd_finetune.py:smoke")
    f.add_argument("--workdir", required=True, help="run directory (checkpoints, export/)")
    f.set_defaults(func=_finetune, takes_config=True)


def _finetune(args: argparse.Namespace) -> int:
    """`jaxsynth sd finetune`: `jaxsynth train` plus the latent cache, the memory estimate
    printed before the run, and the export (`<workdir>/export`) for `sd sample --unet/--lora`."""
    from jaxsynth import xla_flags

    xla_flags.apply(compile_cache=True)
    from jaxsynth.commands.train import resolve_config, training_data_first_on_process_0
    from jaxsynth.sd import finetune as ft
    from jaxsynth.train.loop import train

    config = resolve_config(args)
    task = ft.make_task(config)
    data = training_data_first_on_process_0(config, args.workdir)
    n = len(data.arrays["image"]) if config.sd_ft.cache_latents else 0
    print(ft.format_memory(ft.memory_estimate(task, n)), flush=True)
    task.prepare(data.arrays["image"], data.arrays["label"])
    result = train(config, args.workdir, data, task=task)
    out = ft.export(task, result.state, Path(args.workdir) / "export")
    print(f"done: step {result.step}; exported to {out.resolve()}")
    return 0


def _jaxsynth_version() -> str:
    """The installed distribution's version (robust to `jaxsynth` importing as a namespace)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxsynth")
    except PackageNotFoundError:
        return "unknown"


def run(args: argparse.Namespace) -> int:
    from jaxsynth import xla_flags

    xla_flags.apply(compile_cache=True)
    from jaxsynth.sd.pipeline import check_model_folder, validate_sampling_args

    # Cheap checks first: a typo should not cost a model load.
    validate_sampling_args(
        num=args.num,
        steps=args.steps,
        size=args.size,
        out_size=args.out_size,
        batch_per_device=args.batch_per_device,
        seed=args.seed,
    )
    check_model_folder(args.model)
    for flag, folder, needed in (("--unet", args.unet, "unet/diffusion_flax_model.msgpack"),
                                 ("--lora", args.lora, "lora.json")):  # fmt: skip
        if folder and not (Path(folder) / needed).is_file():
            raise UserError(f"{flag} {folder}: no {needed} (an export of `jaxsynth sd finetune`)")

    import jax
    import numpy as np
    from PIL import Image

    from jaxsynth.sd.pipeline import sample_images

    validate_sampling_args(num=args.num, num_devices=jax.local_device_count())
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None

    def name(i: int) -> str:
        return f"sample_{i:05d}.png"

    def save(indices, images) -> None:
        for i, im in zip(indices, images):
            Image.fromarray(im).save(out / name(int(i)))

    stats: dict = {}
    t0 = time.time()
    images = sample_images(
        args.model,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        num=args.num,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        scheduler=args.scheduler,
        size=args.size,
        out_size=args.out_size,
        batch_per_device=args.batch_per_device,
        progress=not args.quiet,
        dtype=args.dtype,
        on_batch=save,
        stats=stats,
        unet_dir=args.unet,
        lora_dir=args.lora,
    )
    np.savez_compressed(out / "samples.npz", images=images)
    import diffusers

    sidecar = {
        "model": "stable_diffusion",
        "model_path": str(Path(args.model).resolve()),
        "unet": str(Path(args.unet).resolve()) if args.unet else None,
        "lora": str(Path(args.lora).resolve()) if args.lora else None,
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance,
        "scheduler": args.scheduler,
        "size": args.size,
        "out_size": args.out_size,
        "resize": "PIL LANCZOS (antialiased)" if args.out_size != args.size else "none",
        "num": args.num,
        "dtype": args.dtype,
        "num_devices": stats["num_devices"],
        "batch_per_device": stats["batch_per_device"],
        "noise": "image i's initial latents ~ N(0, I) from jax.random.fold_in(key(seed), i)",
        "images": [{"file": name(i), "index": i, "seed": args.seed} for i in range(args.num)],
        "timing_s": {
            "load": round(stats["load_s"], 3),
            "first_batch_with_compile": round(stats["first_batch_s"], 3),
            "total": round(time.time() - t0, 3),
        },
        "images_per_s_after_compile": stats["steady_images_per_s"],
        "versions": {
            "jaxsynth": _jaxsynth_version(),
            "jax": jax.__version__,
            "diffusers": diffusers.__version__,
        },
    }
    (out / "samples.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {args.num} images ({args.out_size} px) to {out}")
    return 0
