"""Paper 002's DDPM checks on the built-in phantom: class grid + FID, and mask-guided IoU.

Train the two models first (each ~15 min on a 2-core CPU, minutes on a GPU):

    jaxsynth train --config configs/ddpm.py:phantom,class --workdir runs/ddpm_class
    jaxsynth train --config configs/ddpm.py:phantom,mask  --workdir runs/ddpm_mask
    python examples/ddpm_phantom_quality.py --class-run runs/ddpm_class \
        --mask-run runs/ddpm_mask --out runs/ddpm_quality

Writes `<out>/quality.json` and PNGs:
* `class_grid.png`: one row of samples per class (classifier-free guidance), next to a row of
  real held-out tiles of that class; FID per class vs the held-out (val + test) tiles of that
  class, in domain features (paper 000's CNN trained on the run's training split) unless
  `--inception-weights` is given (then pytorch-fid's Inception, comparable with papers).
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


def _domain(split):
    """Paper 000's CNN trained on the run's training split: (variables, model)."""
    from jaxsynth.eval.monitor import FeatureData, domain_classifier

    data = FeatureData(split.train.images, split.train.labels, split.val.images, split.val.labels)
    return domain_classifier(data)


def _extractor(trained, weights: str | None):
    from jaxsynth.eval.features import InceptionExtractor
    from jaxsynth.eval.monitor import domain_extractor

    if weights:
        return InceptionExtractor(weights)
    return domain_extractor(trained=trained)


def _sample(task, state, n, rng, batch, guidance=None, **kw):
    from jaxsynth.tasks.ddpm import sampler_options
    from jaxsynth.train.visuals import to_uint8

    options = sampler_options(task, guidance=guidance)

    fn = jax.jit(
        lambda st, k, lab, m: task.sample_with_options(
            st, k, lab.shape[0], labels=lab, masks=m, options=options
        )
    )
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


def _rows_grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """One grid row per array in `rows` (each (k, H, W, 3) uint8), white padding."""
    k = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    out = np.full((len(rows) * (h + pad) + pad, k * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + h, x : x + w] = img
    return out


def class_quality(
    run: str, out: Path, num: int, weights: str | None, guidance: float | None = None
) -> dict:
    from jaxsynth.eval import fid
    from jaxsynth.eval.classification import roc_auc
    from jaxsynth.tasks.classify import predict_proba
    from jaxsynth.train.visuals import save_png

    task, state, config, step, split = _split_and_task(run)
    trained = _domain(split)
    extractor = _extractor(trained, weights)
    minority = split.label_of(config.data.get("minority_class", "tumour"))
    samples = {}
    rows, result = [], {"run": run, "step": step, "features": extractor.id, "per_class": {}}
    result["guidance"] = guidance if guidance is not None else task.default_options.guidance
    names = split.class_names
    real_of = {
        c: np.concatenate([split.val.of_classes([c]).images, split.test.of_classes([c]).images])
        for c in range(len(names))
    }
    feats_of = {c: extractor(x) for c, x in real_of.items()}
    for label, name in enumerate(names):
        real = real_of[label]
        t0 = time.perf_counter()
        fake = _sample(
            task, state, num, jax.random.key(100 + label), 50, guidance=guidance,
            labels=np.full(num, label, np.int32),
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        samples[name] = fake
        f_fake = extractor(fake)
        value = fid.fid_from_features(feats_of[label], f_fake)
        result["per_class"][name] = {
            "fid": value,
            # a sample of class c should be closer to real class c than to the other classes
            "fid_vs_other_classes": {
                names[o]: fid.fid_from_features(feats_of[o], f_fake)
                for o in range(len(names))
                if o != label
            },
            "num_fake": num,
            "num_real": len(real),
            "sample_seconds": seconds,
        }
        # what a classifier trained on REAL tiles calls the samples (higher = more like the class)
        p_minority = predict_proba(trained[0], fake, model=trained[1])
        result["per_class"][name]["real_classifier_p_minority"] = float(p_minority.mean())
        result["per_class"][name]["real_classifier_p_minority_on_real"] = float(
            predict_proba(trained[0], real, model=trained[1]).mean()
        )
        rows += [fake[:8], real[:8]]
        print(f"{name}: FID {value:.1f} ({num} samples vs {len(real)} held-out, {seconds:.0f}s)")
    # rows: samples of class 0, real class 0, samples of class 1, real class 1, ...
    save_png(_rows_grid(rows), out / "class_grid.png")
    np.savez_compressed(out / "class_samples.npz", **samples)
    if len(names) == 2:  # can a real-trained classifier tell the two sample sets apart?
        other = 1 - minority
        p = predict_proba(
            trained[0], np.concatenate([samples[names[other]], samples[names[minority]]]),
            model=trained[1],
        )  # fmt: skip
        y = np.r_[np.zeros(num), np.ones(num)]
        result["real_classifier_auc_on_samples"] = roc_auc(y, p)
        print(f"real-trained classifier, AUC separating the sampled classes: {roc_auc(y, p):.3f}")
    return result


def mask_quality(run: str, out: Path, num: int) -> dict:
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
    save_png(
        _rows_grid([to_rgb(m8), fake[:8], to_rgb(seg.reshape(m8.shape))]), out / "mask_grid.png"
    )
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
    p.add_argument("--mask-run", help="run dir of a ddpm.conditioning='mask' model")
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, default=300, help="samples per class / masks")
    p.add_argument("--guidance", type=float, help="classifier-free guidance (default: config)")
    p.add_argument("--inception-weights", help="pytorch-fid's .pth (local); default: domain")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    if args.class_run:
        result["class"] = class_quality(
            args.class_run, out, args.num, args.inception_weights, args.guidance
        )
    if args.mask_run:
        result["mask"] = mask_quality(args.mask_run, out, args.num)
    (out / "quality.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'quality.json'}")


if __name__ == "__main__":
    main()
