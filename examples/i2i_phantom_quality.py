"""Paper 004's Table 3 scores (SSIM, PSNR, FID) for pix2pix and CycleGAN, against PAIRED truth
on the built-in phantom.

Train first (each ~10 min on a 2-core CPU; see docs/image_to_image.md for the measured runs):

    jaxsynth train --config configs/pix2pix.py --workdir runs/pix2pix
    jaxsynth train --config configs/cyclegan.py --workdir runs/cyclegan
    python examples/i2i_phantom_quality.py --pix2pix-run runs/pix2pix \
        --cyclegan-run runs/cyclegan --out runs/i2i_quality

Held-out pairs are the run's TEST split (never trained on):
* pix2pix: each test tile's exact nuclei mask (+ its class label) -> synthetic tile, scored
  against the real tile of that mask: SSIM, PSNR, FID (domain features, or pytorch-fid's
  Inception when `--inception-weights` is given) vs the real test tiles, and mask IoU of the
  nuclei re-segmented from the output (diffusion/segmentation.py) vs the input mask, next to
  the same segmenter on the real tiles (its ceiling) and against shuffled masks (chance).
  Then as the study samples it: new layouts from the training-mask bank, per class, FID vs that
  class's test tiles -- next to any `--gan-run NAME=DIR` (an unconditional GAN trained on the
  same split, e.g. the DCGAN) scored the same way.
* CycleGAN: each test tile (protocol A) -> protocol B, scored against the SAME tissue rendered
  under protocol B (jaxsynth/data/stain.py), and B -> A against the original tile; plus the
  stain-statistics distance (mean H/E optical densities, eval/stain_metrics.py). "no
  translation" (the input itself scored against the truth) is the baseline every number must
  beat.
Writes `<out>/quality.json`, `pix2pix_grid.png` (mask | synthetic | real) and `cyclegan_grid.png`
(A input | A->B | B truth | B->A).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def _load(run: str):
    from jaxsynth.data.split import load_or_build_split
    from jaxsynth.train.checkpoint import load_trained

    task, state, config, step = load_trained(run)
    return task, state, config, step, load_or_build_split(config, run, progress=False)


def _batched(fn, inputs: list[np.ndarray], batch: int = 50) -> np.ndarray:
    from jaxsynth.train.visuals import to_uint8

    n = len(inputs[0])
    out = [
        to_uint8(np.asarray(fn(*(jnp.asarray(x[i : i + batch]) for x in inputs))))
        for i in range(0, n, batch)
    ]
    return np.concatenate(out)


def _pair_scores(fake: np.ndarray, truth: np.ndarray) -> dict:
    from jaxsynth.eval.image_metrics import psnr, ssim

    s = np.asarray(ssim(fake, truth))
    p = np.asarray(psnr(fake, truth))
    p = p[np.isfinite(p)]
    return {
        "ssim": float(s.mean()),
        "ssim_sd": float(s.std()),
        "psnr_db": float(p.mean()),
        "psnr_sd": float(p.std()),
        "n": len(fake),
    }


class _Features:
    """FID feature space: pytorch-fid's Inception (given weights) or paper 000's CNN trained on
    the run's own training split (domain features; comparable only within this data)."""

    def __init__(self, split, weights: str | None):
        from jaxsynth.eval.features import InceptionExtractor
        from jaxsynth.tasks.domain import FeatureData, domain_extractor

        if weights:
            self.extractor, self.kind = InceptionExtractor(weights), "inception"
        else:
            data = FeatureData(
                split.train.images, split.train.labels, split.val.images, split.val.labels
            )
            self.extractor, self.kind = domain_extractor(data), "domain"

    def fid(self, a: np.ndarray, b: np.ndarray) -> float:
        from jaxsynth.eval import fid

        return float(fid.fid_from_features(self.extractor(a), self.extractor(b)))


def _grid(rows: list[np.ndarray], path: Path, scale: int = 3) -> None:
    from jaxsynth.train.visuals import make_grid, save_png

    grid = make_grid(np.concatenate(rows), cols=len(rows[0]))
    save_png(np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1), path)


def _batched_sample(fn, key, n: int, batch: int = 50) -> np.ndarray:
    from jaxsynth.train.visuals import to_uint8

    out = []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        out.append(to_uint8(np.asarray(fn(jax.random.fold_in(key, i), m))))
    return np.concatenate(out)


def pix2pix_quality(run: str, out: Path, weights: str | None, gan_runs=()) -> dict:
    from jaxsynth.diffusion.segmentation import mask_guided_iou

    task, state, config, step, split = _load(run)
    test = split.test
    masks = test.masks.astype(np.float32)[..., None]
    labels = test.labels.astype(np.int32)
    fn = jax.jit(lambda m, lab: task.translate(state, m, lab if task.conditional else None))
    t0 = time.perf_counter()
    fake = _batched(fn, [masks, labels])
    seconds = time.perf_counter() - t0
    feats = _Features(split, weights)
    result = {
        "run": run,
        "step": int(step),
        "image_size": int(config.image_size),
        **_pair_scores(fake, test.images),
        f"fid_{feats.kind}": feats.fid(fake, test.images),
        f"fid_{feats.kind}_real_val_vs_test": feats.fid(split.val.images, test.images),
        "translate_seconds": seconds,
    }
    iou = mask_guided_iou(fake, masks)
    real_iou = mask_guided_iou(test.images, masks)
    result.update(
        mask_iou=iou["iou"], mask_iou_shuffled=iou["iou_shuffled"], mask_iou_real=real_iou["iou"]
    )
    per_class = {}
    for c, name in enumerate(split.class_names):
        sel = labels == c
        if sel.sum() >= 2:
            per_class[name] = {
                **_pair_scores(fake[sel], test.images[sel]),
                f"fid_{feats.kind}": feats.fid(fake[sel], test.images[sel]),
            }
    result["per_class"] = per_class
    # The study's way: new layouts from the training-mask bank (no test mask is seen), per class,
    # FID against that class's test tiles; the same numbers for any unconditional GAN given.
    new_layouts = {}
    for c, name in enumerate(split.class_names):
        n = int((labels == c).sum())
        if n >= 2:
            key = jax.random.fold_in(jax.random.key(0), c)
            imgs = _batched_sample(
                lambda k, m, c=c: task.sample(state, k, m, jnp.full((m,), c, jnp.int32)), key, n
            )
            new_layouts[name] = {f"fid_{feats.kind}": feats.fid(imgs, test.images[labels == c])}
    result["new_layouts"] = new_layouts
    for gan_run in gan_runs:
        name, _, path = gan_run.partition("=")
        g_task, g_state, g_config, g_step, g_split = _load(path)
        if not np.array_equal(np.asarray(g_split.test.ids), np.asarray(test.ids)):
            raise SystemExit(f"--gan-run {gan_run}: its test split differs from the pix2pix run's")
        cls = list(split.class_names).index(g_config.data.train_classes[0])
        n = int((labels == cls).sum())
        imgs = _batched_sample(
            lambda k, m, t=g_task, s=g_state: t.sample(s, k, m), jax.random.key(1), n
        )
        result.setdefault("gan_baselines", {})[name] = {
            "run": path,
            "step": int(g_step),
            "class": split.class_names[cls],
            f"fid_{feats.kind}": feats.fid(imgs, test.images[labels == cls]),
        }
    mask_rgb = np.repeat((test.masks[:8, ..., None] > 0).astype(np.uint8) * 255, 3, axis=-1)
    _grid([mask_rgb, fake[:8], test.images[:8]], out / "pix2pix_grid.png")
    return result


def cyclegan_quality(run: str, out: Path, weights: str | None) -> dict:
    from jaxsynth.data.phantom import render_ids
    from jaxsynth.eval.stain_metrics import stain_distance

    task, state, config, step, split = _load(run)
    test = split.test
    a = test.images
    b, _ = render_ids(
        test.ids, int(config.image_size), config.cyclegan.b_protocol, config.data.phantom.difficulty
    )

    def translate(direction):
        return jax.jit(
            lambda x: task.translate(state, x.astype(jnp.float32) / 127.5 - 1.0, direction)
        )

    t0 = time.perf_counter()
    fake_b = _batched(translate("ab"), [a])
    fake_a = _batched(translate("ba"), [b])
    seconds = time.perf_counter() - t0
    feats = _Features(split, weights)
    k = f"fid_{feats.kind}"
    result = {
        "run": run,
        "step": int(step),
        "image_size": int(config.image_size),
        "a_to_b": {**_pair_scores(fake_b, b), k: feats.fid(fake_b, b), **stain_distance(fake_b, b)},
        "b_to_a": {**_pair_scores(fake_a, a), k: feats.fid(fake_a, a), **stain_distance(fake_a, a)},
        "no_translation_a_vs_b": {**_pair_scores(a, b), k: feats.fid(a, b), **stain_distance(a, b)},
        "translate_seconds": seconds,
    }
    _grid([a[:8], fake_b[:8], b[:8], fake_a[:8]], out / "cyclegan_grid.png")
    return result


def _print(result: dict, indent: str = "  ") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print(value, indent + "  ")
        elif isinstance(value, float):
            print(f"{indent}{key}: {value:.4f}")
        else:
            print(f"{indent}{key}: {value}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pix2pix-run", help="workdir of a trained configs/pix2pix.py run")
    p.add_argument("--cyclegan-run", help="workdir of a trained configs/cyclegan.py run")
    p.add_argument("--out", required=True)
    p.add_argument("--inception-weights", help="pytorch-fid's pt_inception .pth (local)")
    p.add_argument(
        "--gan-run",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="an unconditional GAN run on the same split and size (e.g. dcgan=runs/dcgan32): "
        "its samples' FID vs the test tiles of its class, next to pix2pix on new layouts",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "note": "SIMULATED H&E phantom, not paper 004's MRI/CT: a different modality and data; "
        "paper 004 Table 3: cGAN SSIM 0.95 / PSNR 36.8 dB / FID 12.4 (BRATS MRI), "
        "CycleGAN 0.92 / 34.1 dB / 15.7 (LIDC-IDRI CT)"
    }
    if args.pix2pix_run:
        report["pix2pix"] = pix2pix_quality(
            args.pix2pix_run, out, args.inception_weights, args.gan_run
        )
        print("pix2pix (mask -> tile, test split):")
        _print(report["pix2pix"])
    if args.cyclegan_run:
        report["cyclegan"] = cyclegan_quality(args.cyclegan_run, out, args.inception_weights)
        print("CycleGAN (protocol A <-> B, test split vs paired truth):")
        _print(report["cyclegan"])
    (out / "quality.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'quality.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
