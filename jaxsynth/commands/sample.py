"""`jaxsynth sample --workdir W --num N --out DIR [--label tumour] [--seed S]`.

Draws N images from the EMA generator of the latest checkpoint in W and writes
`DIR/sample_00000.png ...`, `DIR/samples.npz` (uint8 `images` (N,H,W,3), int32 `labels`), and
`DIR/samples.json` (model, step, seed, label, sampler options, config hash, workdir).
DDPM runs also take `--sampler ddim|ddpm --steps 50 --eta 0 --guidance 2.0` and, for
mask-guided models, `--masks DIR` (one PNG nuclei mask per image; non-zero = nucleus).
pix2pix (`--masks DIR`) and CycleGAN (`--input DIR [--direction ba]`): commands/sample_i2i.py.
StyleGAN2 runs take `--truncation PSI` (w pulled towards the mean w; 1 = off).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxsynth.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="draw images from a trained generator (EMA params)")
    p.add_argument("--workdir", required=True, help="run directory with checkpoints")
    p.add_argument("--num", type=int, help="number of images (default: one per --masks file)")
    p.add_argument("--out", required=True, help="output directory (new or empty)")
    p.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --out (replacing files)"
    )
    p.add_argument("--label", help="class name to sample (conditional models)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), help="DDPM: sampler")
    p.add_argument("--steps", type=int, help="DDPM: DDIM steps")
    p.add_argument("--eta", type=float, help="DDPM: DDIM eta (0 = deterministic)")
    p.add_argument("--guidance", type=float, help="DDPM: classifier-free guidance scale")
    p.add_argument("--masks", help="DDPM (mask-guided) / pix2pix: folder of mask PNGs")
    p.add_argument("--input", help="CycleGAN: folder of RGB tiles to translate")
    p.add_argument("--direction", choices=("ab", "ba"), help="CycleGAN: A->B (default) or B->A")
    p.add_argument("--truncation", type=float, help="StyleGAN2: truncation psi (1 = off)")
    p.set_defaults(func=run, takes_config=False)


def _mask_iou(images, masks) -> dict:
    """Paper 002's score for mask-guided samples: IoU of the re-segmented nuclei vs the input
    mask, next to the same with the masks shuffled across images (the chance level)."""
    from jaxsynth.diffusion.segmentation import mask_guided_iou

    scores = mask_guided_iou(images, masks)
    return {k: float(scores[k]) for k in ("iou", "iou_shuffled") if k in scores}


def run(args: argparse.Namespace) -> int:
    from jaxsynth import xla_flags

    xla_flags.apply(compile_cache=True)

    from jaxsynth.workdir_lock import WorkdirLock

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UserError(
            f"--out {out}: folder is not empty ({sum(1 for _ in out.iterdir())} entries); "
            f"pick a new folder or pass --overwrite"
        )
    with WorkdirLock(args.workdir, "sample", create=False):
        return _sample(args, out)


def _sample(args: argparse.Namespace, out: Path) -> int:
    import numpy as np

    from jaxsynth.config import config_hash
    from jaxsynth.train.checkpoint import load_trained
    from jaxsynth.train.sampling import sample_images
    from jaxsynth.train.task import has_sampler
    from jaxsynth.train.visuals import save_png

    task, state, config, step = load_trained(args.workdir, args.step)
    if hasattr(task, "translate") and (args.masks or args.input or not has_sampler(task)):
        # pix2pix --masks / CycleGAN --input: one output per input file
        from jaxsynth.commands.sample_i2i import run_i2i

        return run_i2i(args, task, state, config, step)
    if args.input or args.direction:
        raise UserError(f"--input/--direction: task '{task.name}' does not translate images")
    if not has_sampler(task):
        raise UserError(f"--workdir {args.workdir}: task '{task.name}' cannot sample images")
    if args.truncation is not None:
        if not hasattr(task, "with_truncation"):
            raise UserError(f"--truncation: task '{task.name}' has no truncation")
        task = task.with_truncation(args.truncation)
    mask_names, masks = (None, None)
    if args.masks:
        from jaxsynth.diffusion.masks import load_masks

        masks, mask_names = load_masks(args.masks, int(config.image_size))
    num = args.num if args.num is not None else (len(masks) if masks is not None else None)
    if num is None:
        raise UserError("--num is required (or --masks DIR: one image per mask)")
    options = {
        k: getattr(args, k)
        for k in ("sampler", "steps", "eta", "guidance")
        if getattr(args, k) is not None
    }
    out.mkdir(parents=True, exist_ok=True)
    images, labels = sample_images(
        task,
        state,
        config,
        num=num,
        seed=args.seed,
        label=args.label,
        options=options or None,
        masks=masks,
        progress=lambda done, total: print(f"sampled {done}/{total}", flush=True),
    )
    for i, img in enumerate(images):
        save_png(img, out / f"sample_{i:05d}.png")
    np.savez_compressed(out / "samples.npz", images=images, labels=labels)
    sidecar = {
        "model": task.name,
        "step": int(step),
        "seed": int(args.seed),
        "num": int(num),
        "label": args.label,
        "conditional": bool(getattr(task, "conditional", False)),
        "sampler_options": options,
        "truncation": args.truncation,
        "masks": mask_names[:num] if mask_names else None,
        **(_mask_iou(images, masks[:num]) if masks is not None else {}),
        "config_hash": config_hash(config),
        "workdir": str(Path(args.workdir).resolve()),
        "params": "ema",
    }
    (out / "samples.json").write_text(json.dumps(sidecar, indent=2))
    print(f"wrote {num} PNGs, samples.npz and samples.json to {out}")
    return 0
