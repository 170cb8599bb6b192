"""`jaxsynth sample --workdir W --num N --out DIR [--label tumour] [--seed S]`.

Draws N images from the EMA generator of the latest checkpoint in W and writes
`DIR/sample_00000.png ...`, `DIR/samples.npz` (uint8 `images` (N,H,W,3), int32 `labels`), and
`DIR/samples.json` (model, step, seed, label, config hash, workdir).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxsynth.errors import UserError

CHUNK = 64  # images per jitted sampling call (one compilation, bounded memory)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="draw images from a trained generator (EMA params)")
    p.add_argument("--workdir", required=True, help="run directory with checkpoints")
    p.add_argument("--num", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--label", help="class name to sample (conditional models)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    p.set_defaults(func=run, takes_config=False)


def resolve_label(config, conditional: bool, label: str | None) -> int | None:
    """Class index for `--label`, checked against what the model can produce."""
    classes = tuple(config.data.get("classes", ()))
    trained_on = tuple(config.data.get("train_classes", classes))
    if label is None:
        return None
    if label not in classes:
        raise UserError(f"--label {label}: unknown class (classes: {', '.join(classes)})")
    if not conditional and trained_on != (label,):
        raise UserError(
            f"--label {label}: this model is unconditional and was trained on "
            f"{', '.join(trained_on)} only"
        )
    return classes.index(label) if conditional else None


def run(args: argparse.Namespace) -> int:
    from jaxsynth import xla_flags

    xla_flags.apply()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsynth.config import config_hash
    from jaxsynth.train.checkpoint import load_trained
    from jaxsynth.train.task import has_sampler
    from jaxsynth.train.visuals import save_png, to_uint8

    if args.num <= 0:
        raise UserError(f"--num {args.num}: must be a positive number of images")
    task, state, config, step = load_trained(args.workdir, args.step)
    if not has_sampler(task):
        raise UserError(f"--workdir {args.workdir}: task '{task.name}' cannot sample images")
    conditional = bool(getattr(task, "conditional", False))
    label = resolve_label(config, conditional, args.label)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    n_chunk = min(CHUNK, args.num)
    draw = jax.jit(lambda st, rng, lb: task.sample(st, rng, n_chunk, lb))
    base = jax.random.PRNGKey(args.seed)
    images, labels = [], []
    for i, start in enumerate(range(0, args.num, n_chunk)):
        if conditional:
            lb = (
                jnp.full((n_chunk,), label, jnp.int32)
                if label is not None
                else jax.random.randint(
                    jax.random.fold_in(base, 10_000 + i),
                    (n_chunk,),
                    0,
                    int(config.model.num_classes),
                )
            )
        else:
            lb = None
        x = to_uint8(np.asarray(draw(state, jax.random.fold_in(base, i), lb)))
        take = min(n_chunk, args.num - start)
        images.append(x[:take])
        fallback = -1 if not conditional else 0
        labels.append(np.asarray(lb)[:take] if lb is not None else np.full(take, fallback))
        print(f"sampled {start + take}/{args.num}", flush=True)
    images_np = np.concatenate(images)
    labels_np = np.concatenate(labels).astype(np.int32)
    if not conditional and args.label is not None:
        labels_np[:] = tuple(config.data.classes).index(args.label)
    for i, img in enumerate(images_np):
        save_png(img, out / f"sample_{i:05d}.png")
    np.savez_compressed(out / "samples.npz", images=images_np, labels=labels_np)
    sidecar = {
        "model": task.name,
        "step": int(step),
        "seed": int(args.seed),
        "num": int(args.num),
        "label": args.label,
        "conditional": conditional,
        "config_hash": config_hash(config),
        "workdir": str(Path(args.workdir).resolve()),
        "params": "ema",
    }
    (out / "samples.json").write_text(json.dumps(sidecar, indent=2))
    print(f"wrote {args.num} PNGs, samples.npz and samples.json to {out}")
    return 0
