"""Paper 002's DDPM checks on the built-in phantom: class grid + FID, and mask-guided IoU.

Train the models first (each ~5 min on a 2-core CPU, well under a minute on a GPU):

    jaxsynth train --config configs/ddpm.py:phantom,class --workdir runs/ddpm_class
    jaxsynth train --config configs/ddpm.py:phantom,mask  --workdir runs/ddpm_mask
    # optional, paper 002 variant 1: one unconditional model per class
    jaxsynth train --config configs/ddpm.py:phantom,label=normal --workdir runs/ddpm_normal
    jaxsynth train --config configs/ddpm.py:phantom,label=tumour --workdir runs/ddpm_tumour
    python examples/ddpm_phantom_quality.py --class-run runs/ddpm_class \
        --mask-run runs/ddpm_mask --per-class-runs runs/ddpm_normal runs/ddpm_tumour \
        --guidance 1,2,3 --out runs/ddpm_quality

Writes `<out>/quality.json` and PNGs:
* `class_grid.png` (`class_grid_g<w>.png` per guidance when `--guidance` lists several): one
  row of samples per class (classifier-free guidance), next to a row of real held-out tiles of
  that class; `per_class_grid.png` the same for the per-class unconditional models. FID per
  class vs the held-out (val + test) tiles of that class, in domain features (paper 000's CNN
  trained on the run's training split) unless `--inception-weights` is given (then
  pytorch-fid's Inception, comparable with papers); what that CNN (trained on REAL tiles only)
  calls each sample set, and the AUC with which it tells the two sampled classes apart ("does
  each class look like its class").
* `mask_grid.png`: input mask | synthetic image | mask re-segmented from it. The IoU of the
  re-segmented mask with the input mask is paper 002's score (it reported 0.18); next to it the
  same IoU against shuffled masks (chance) and the IoU the same segmenter reaches on the REAL
  held-out tiles with their true masks (the ceiling the segmenter allows).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def _split_and_task(run: str):
    from jaxsynth.data.split import load_or_build_split
    from jaxsynth.train.checkpoint import load_trained

    task, state, config, step = load_trained(run)
    return task, state, config, step, load_or_build_split(config, run, progress=False)


_COMPILED: dict = {}  # (task, options) -> jitted sampler: one compile per model and guidance


def _sample(task, state, n, rng, batch, guidance=None, **kw):
    from jaxsynth.tasks.ddpm import sampler_options
    from jaxsynth.train.visuals import to_uint8

    options = sampler_options(task, guidance=guidance)
    key = (id(task), options)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(
            lambda st, k, lab, m: task.sample_with_options(
                st, k, lab.shape[0], labels=lab, masks=m, options=options
            )
        )
    fn = _COMPILED[key]
    out = []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        lab = kw.get("labels")
        lab = (
            jnp.zeros((size,), jnp.int32) if lab is None else jnp.asarray(lab[start : start + size])
        )
        m = kw.get("masks")
        m = None if m is None else jnp.asarray(m[start : start + size])
        out.append(to_uint8(np.asarray(fn(state, jax.random.fold_in(rng, start), lab, m))))
    return np.concatenate(out)


def _rows_grid(rows: list[np.ndarray]) -> np.ndarray:
    """One grid row per array in `rows` (equal-length (k, H, W, 3) uint8 arrays)."""
    from jaxsynth.train.visuals import make_grid

    return make_grid(np.concatenate(rows), cols=len(rows[0]))


def _report(scored: dict, names: tuple[str, ...], minority: int) -> None:
    for name in names:
        r = scored["per_class"][name]
        print(
            f"  {name}: FID {r['fid']:.1f} ({r['num_fake']} samples vs {r['num_real']} held-out), "
            f"P({names[minority]}) {r['real_classifier_p_minority']:.2f} "
            f"(real {r['real_classifier_p_minority_on_real']:.2f})"
        )
    if "real_classifier_auc_on_samples" in scored:
        print(
            "  real-trained classifier, AUC separating the sampled classes: "
            f"{scored['real_classifier_auc_on_samples']:.3f} "
            f"(real held-out tiles: {scored['real_classifier_auc_on_real']:.3f})"
        )


def _class_grid(ref, samples: dict[str, np.ndarray], path: Path, scale: int) -> None:
    """Rows: samples of class 0, real class 0, samples of class 1, real class 1, ..."""
    from jaxsynth.train.visuals import save_png

    rows = []
    for label, name in enumerate(ref.names):
        rows += [samples[name][:8], ref.real_of[label][:8]]
    save_png(_upscale(_rows_grid(rows), scale), path)


def _score(ref, samples: dict, seconds: dict, out: Path, stem: str, scale: int) -> dict:
    scored = ref.score(samples)
    for name, sec in seconds.items():
        scored["per_class"][name]["sample_seconds"] = sec
    _report(scored, ref.names, ref.minority)
    _class_grid(ref, samples, out / f"{stem}_grid.png", scale)
    np.savez_compressed(out / f"{stem}_samples.npz", **samples)
    return scored


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling so 32-px tiles are readable in a note or a doc."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def _reference(split, config, weights: str | None):
    from jaxsynth.tasks.domain import class_fidelity

    minority = config.data.get("minority_class", "tumour")
    return class_fidelity(split, inception_weights=weights, minority=minority)


def class_quality(
    run: str, out: Path, num: int, weights: str | None, guidances: list[float | None], scale: int
) -> dict:
    """Class-conditional model (classifier-free guidance): one scored sample set per guidance."""
    task, state, config, step, split = _split_and_task(run)
    ref = _reference(split, config, weights)
    result = {"run": run, "step": step, "by_guidance": []}
    for guidance in guidances:
        g = guidance if guidance is not None else task.default_options.guidance
        print(f"class-conditional model, guidance {g:g}:")
        samples, seconds = {}, {}
        for label, name in enumerate(ref.names):
            t0 = time.perf_counter()
            samples[name] = _sample(
                task, state, num, jax.random.key(100 + label), 50, guidance=g,
                labels=np.full(num, label, np.int32),
            )  # fmt: skip
            seconds[name] = time.perf_counter() - t0
        stem = "class" if len(guidances) == 1 else f"class_g{g:g}"
        result["by_guidance"].append(
            dict(_score(ref, samples, seconds, out, stem, scale), guidance=g)
        )
    return result


def per_class_quality(
    runs: list[str], out: Path, num: int, weights: str | None, scale: int
) -> dict:
    """Paper 002 variant 1: one unconditional model per class (`ddpm.conditioning='none'`), each
    sampled for its own class and scored exactly like the class-conditional model."""
    models = [_split_and_task(r) for r in runs]
    split, config0 = models[0][4], models[0][2]
    held_out = lambda m: [
        e["sha256"] for part in ("val", "test") for e in m.manifest["splits"][part]
    ]
    if any(held_out(m[4]) != held_out(split) for m in models[1:]):
        raise SystemExit(f"--per-class-runs {runs}: the runs do not share one held-out split")
    by_label = {str(m[2].ddpm.label): m for m in models}
    missing = [n for n in split.class_names if n not in by_label]
    if missing or any(m[0].conditioning != "none" for m in models):
        raise SystemExit(
            f"--per-class-runs: need one ddpm.conditioning='none' run per class "
            f"{split.class_names}; missing {missing}"
        )
    ref = _reference(split, config0, weights)
    print("per-class unconditional models:")
    samples, seconds = {}, {}
    for label, name in enumerate(ref.names):
        task, state = by_label[name][0], by_label[name][1]
        t0 = time.perf_counter()
        samples[name] = _sample(task, state, num, jax.random.key(100 + label), 50)
        seconds[name] = time.perf_counter() - t0
    result = dict(_score(ref, samples, seconds, out, "per_class", scale), runs=runs)
    result["steps"] = {name: by_label[name][3] for name in ref.names}
    return result


def mask_quality(run: str, out: Path, num: int, scale: int) -> dict:
    from jaxsynth.diffusion.segmentation import mask_guided_iou, segment_nuclei_batch
    from jaxsynth.train.visuals import save_png

    task, state, config, step, split = _split_and_task(run)
    real = split.test.of_classes(list(range(len(split.class_names))))
    if real.masks is None:
        raise SystemExit(f"{run}: its data source has no nuclei masks")
    masks = real.masks[:num].astype(np.float32)
    masks = masks[..., None] if masks.ndim == 3 else masks  # (N, H, W, 1) for the sampler
    masks = (masks > 0).astype(np.float32)
    fake = _sample(task, state, len(masks), jax.random.key(7), 50, masks=masks)
    scores = mask_guided_iou(fake, masks)
    ceiling = mask_guided_iou(real.images[: len(masks)], masks)
    seg = segment_nuclei_batch(fake[:8]).astype(np.uint8) * 255
    m8 = (masks[:8, ..., 0] * 255).astype(np.uint8)
    to_rgb = lambda g: np.repeat(g[..., None], 3, axis=-1)
    grid = _rows_grid([to_rgb(m8), fake[:8], to_rgb(seg.reshape(m8.shape))])
    save_png(_upscale(grid, scale), out / "mask_grid.png")
    result = {
        "run": run,
        "step": step,
        "num": len(masks),
        "iou": scores["iou"],
        "iou_shuffled_masks": scores["iou_shuffled"],
        "iou_real_images": ceiling["iou"],
        "paper_002_iou": 0.18,
    }
    print(
        f"mask IoU {scores['iou']:.3f} (shuffled masks {scores['iou_shuffled']:.3f}, real "
        f"images {ceiling['iou']:.3f}; paper 002: 0.18)"
    )
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--class-run", help="run dir of a ddpm.conditioning='class' model")
    p.add_argument(
        "--per-class-runs", nargs="+", help="one ddpm.conditioning='none' run dir per class"
    )
    p.add_argument("--mask-run", help="run dir of a ddpm.conditioning='mask' model")
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, default=300, help="samples per class / masks")
    p.add_argument(
        "--guidance", help="classifier-free guidance, or a comma list to sweep (default: config)"
    )
    p.add_argument("--grid-scale", type=int, default=3, help="upscale grids for reading")
    p.add_argument("--inception-weights", help="pytorch-fid's .pth (local); default: domain")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        guidances = [float(g) for g in args.guidance.split(",")] if args.guidance else [None]
    except ValueError:
        raise SystemExit(
            f"--guidance {args.guidance!r}: expected numbers like 2 or 1,2,3"
        ) from None
    result = {}
    if args.class_run:
        result["class"] = class_quality(
            args.class_run, out, args.num, args.inception_weights, guidances, args.grid_scale
        )
    if args.per_class_runs:
        result["per_class_models"] = per_class_quality(
            args.per_class_runs, out, args.num, args.inception_weights, args.grid_scale
        )
    if args.mask_run:
        result["mask"] = mask_quality(args.mask_run, out, args.num, args.grid_scale)
    (out / "quality.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'quality.json'}")


if __name__ == "__main__":
    main()
