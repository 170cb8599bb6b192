"""`jaxsynth eval`: compare a folder of synthetic images with a folder of real ones.

Prints ONE JSON object whose top-level keys are the metric names (`fid`, `kid`, `ssim`, `psnr`,
`precision`, `recall`, `density`, `coverage`, `memorization`, ...) plus `feature_extractor`,
`counts`, `image_size` and `skipped` (every file that could not be decoded, with the reason;
such files are skipped, never fatal).

Without `--inception-weights`, FID is not computed (`"fid": null`) and KID / PRDC /
memorisation use downsampled pixels as features; `feature_extractor` and one stderr line say so,
so those numbers are never mistaken for Inception-based ones.

With `--extractor KIND[:PATH]` (repeatable: `inception:PATH`, `hf-vit:DIR`, `timm-vit:DIR`,
`ssl:DIR`, `pixels`) FD / KID / PRDC are computed in each named space instead, under the keys
`fd_<name>`, `kid_<name>`, `prdc_<name>` (see `jaxsynth.eval.spaces`); memorisation then uses
the first extractor's space. docs/feature_spaces.md lists the supported encoders.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jaxsynth.data.imageio import decode_image, skipped_entries
from jaxsynth.data.types import CorruptImage
from jaxsynth.errors import UserError
from jaxsynth.validate import strict_json

ALL_METRICS = ("fid", "kid", "ssim", "psnr", "prdc", "memorization", "diversity")
DEFAULT_METRICS = "fid,kid,ssim,psnr,prdc"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="image metrics: FID, KID, SSIM, PSNR, PRDC, memorisation"
    )
    p.add_argument("--real", required=True, help="folder of real images (held out from training)")
    p.add_argument("--fake", required=True, help="folder of synthetic images")
    p.add_argument("--train", help="folder of the generator's training images (memorisation)")
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma list from {','.join(ALL_METRICS)} (default {DEFAULT_METRICS}"
        ",memorization when --train is given)",
    )
    p.add_argument("--inception-weights", help="local path to pytorch-fid's pt_inception-*.pth")
    p.add_argument(
        "--extractor",
        action="append",
        default=[],
        help="feature space KIND[:PATH], repeatable: inception:PTH, hf-vit:DIR, timm-vit:DIR, "
        "ssl:DIR, pixels (keys fd_/kid_/prdc_<kind>)",
    )
    p.add_argument("--vit-pool", default="cls", help="ViT feature: cls, mean or cls+mean")
    p.add_argument("--cache-dir", help="where converted weights / real-set statistics are cached")
    p.add_argument("--image-size", type=int, help="resize every image to N x N (default: keep)")
    p.add_argument("--json", dest="json_out", help="also write the JSON object to this file")
    p.add_argument("--grid", help="PNG of the closest synthetic/train pairs (memorisation)")
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--prdc-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run, takes_config=False)


def _list_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def load_folder(folder: str | Path, what: str, image_size: int | None, skipped: list) -> tuple:
    """Decode every file in `folder` to uint8 RGB (N, S, S, 3). Files that fail to decode are
    appended to `skipped`; images of another size are resized (bilinear) to the target size,
    which is `image_size` or else the most common size in the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--{what} {folder}: not a folder")
    decoded, names = [], []
    for name, why in skipped_entries(folder):  # FIFOs, symlink loops: listed, not dropped
        skipped.append({"set": what, "file": name, "reason": why})
    for path in _list_files(folder):
        try:
            img, _ = decode_image(path, name=str(path))
        except CorruptImage as e:
            skipped.append({"set": what, "file": path.name, "reason": str(e)})
            continue
        decoded.append(img)
        names.append(path.name)
    if not decoded:
        raise UserError(f"--{what} {folder}: no decodable images")
    if image_size is None:
        sizes = collections.Counter(im.shape[:2] for im in decoded)
        target = sizes.most_common(1)[0][0]
    else:
        target = (image_size, image_size)
    resized = 0
    out = np.empty((len(decoded), *target, 3), np.uint8)
    for i, im in enumerate(decoded):
        if im.shape[:2] != target:
            im = np.asarray(Image.fromarray(im).resize((target[1], target[0]), Image.BILINEAR))
            resized += 1
        out[i] = im
    return out, names, resized


def compute_metrics(
    real: np.ndarray,
    fake: np.ndarray,
    fake_names: list[str],
    metrics: set[str],
    train: np.ndarray | None = None,
    extractor=None,
    extractor_note: str = "",
    cache_dir: str | None = None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    prdc_k: int = 5,
    grid: str | None = None,
    seed: int = 0,
) -> dict:
    """The metrics in `metrics` for uint8 image sets; `extractor=None` means pixel features
    (then FID is None). Returns the JSON-ready dict."""
    from jaxsynth.eval import fid as fid_mod
    from jaxsynth.eval import image_metrics, kid, memorization, prdc
    from jaxsynth.eval.features import PixelExtractor

    out: dict = {}
    inception = extractor is not None
    feat = extractor if inception else PixelExtractor(16)
    out["feature_extractor"] = feat.id + (f" ({extractor_note})" if extractor_note else "")
    needs_features = metrics & {"fid", "kid", "prdc", "memorization"}
    f_real = f_fake = None
    if needs_features:
        f_fake = feat(fake)
        # The real set is shared by every generator compared against it: cache its features.
        f_real = fid_mod.cached_features(real, feat, feat.id, cache_dir if inception else None)
    if "fid" in metrics:
        out["fid"] = fid_mod.fid_from_features(f_real, f_fake) if inception else None
    if "kid" in metrics:
        out["kid"] = kid.kid(f_real, f_fake, kid_subset_size, kid_subsets, seed)
    if "prdc" in metrics:
        k = min(prdc_k, len(real) - 1, len(fake) - 1)
        if k >= 1:
            pr = prdc.prdc(f_real, f_fake, k)
            out["prdc_k"] = pr.pop("k")
            out.update(pr)
        else:
            out.update({m: None for m in ("precision", "recall", "density", "coverage")})
    if "ssim" in metrics:
        s = image_metrics.ssim_to_set(fake, real)
        out["ssim"] = {"mean": s["mean"], "max": s["max"]}
    if "psnr" in metrics:
        out["psnr"] = {"mean": image_metrics.psnr_to_set(fake, real)["mean"]}
    if "diversity" in metrics and len(fake) >= 2:
        out["diversity"] = image_metrics.ms_ssim_diversity(fake, seed=seed)
    if "memorization" in metrics:
        if train is None:
            raise UserError(
                "--metrics memorization needs --train DIR (the generator's training set)"
            )
        f_train = feat(train)
        rep = memorization.memorization_report(f_fake, f_train, f_real, fake, train, real)
        mem = {
            "flagged": [n for n, f in zip(fake_names, rep["flagged"], strict=True) if f],
            "flagged_fraction": rep["flagged_fraction"],
            "percentile": rep["percentile"],
            "thresholds": {k: v["threshold"] for k, v in rep["spaces"].items()},
        }
        if grid:
            mem["grid"] = str(memorization.closest_pairs_grid(fake, train, rep, grid))
        out["memorization"] = mem
    return out


def run(args: argparse.Namespace) -> int:
    metrics = args.metrics or DEFAULT_METRICS + (",memorization" if args.train else "")
    wanted = {m.strip() for m in metrics.split(",") if m.strip()}
    unknown = wanted - set(ALL_METRICS)
    if unknown:
        raise UserError(
            f"--metrics: unknown {sorted(unknown)}; choose from {','.join(ALL_METRICS)}"
        )
    if "memorization" in wanted and not args.train:
        raise UserError("--metrics memorization needs --train DIR (the generator's training set)")
    skipped: list = []
    real, _, r_resized = load_folder(args.real, "real", args.image_size, skipped)
    size = args.image_size or real.shape[1]
    fake, fake_names, f_resized = load_folder(args.fake, "fake", size, skipped)
    train = None
    t_resized = 0
    if args.train:
        train, _, t_resized = load_folder(args.train, "train", size, skipped)

    extractor, note, spaces = None, "", None
    if wanted & {"fid", "kid", "prdc", "memorization"}:
        for what, images in (("real", real), ("fake", fake)):
            if len(images) < 2:  # KID/FID/PRDC are set statistics
                raise UserError(
                    f"--{what} {getattr(args, what)}: {len(images)} decodable image; FID/KID/"
                    f"PRDC need at least 2 per set (--metrics ssim,psnr compares single images)"
                )
    extractor, note, spaces = None, "", None
    if args.extractor:
        from jaxsynth.eval import extractors as ex

        if args.inception_weights:
            raise UserError("--inception-weights with --extractor: use --extractor inception:PATH")

        specs = ex.name_specs([ex.parse_extractor(t) for t in args.extractor])
        spaces = {
            s.name: ex.build_extractor(
                s,
                cache_dir=args.cache_dir,
                batch_size=args.batch_size,
                pool=args.vit_pool,
                log=True,
            )
            for s in specs
        }
        extractor = next(iter(spaces.values()))  # memorisation's feature space
        note = f"memorisation in {specs[0].name} features"
    elif wanted & {"fid", "kid", "prdc", "memorization"}:
        if args.inception_weights:
            from jaxsynth.eval.features import InceptionExtractor

            extractor = InceptionExtractor(
                args.inception_weights, args.cache_dir, batch_size=args.batch_size, log=True
            )
        else:
            note = "no --inception-weights: FID skipped, KID/PRDC/memorisation on pixel features"
            print(
                "jaxsynth eval: no --inception-weights given: FID is skipped and KID/PRDC/"
                "memorisation use 16x16 pixel features (not comparable with Inception numbers)",
                file=sys.stderr,
            )
    result = compute_metrics(
        real,
        fake,
        fake_names,
        wanted - {"fid", "kid", "prdc"} if spaces else wanted,
        train=train,
        extractor=extractor,
        extractor_note=note,
        cache_dir=args.cache_dir,
        kid_subset_size=args.kid_subset_size,
        kid_subsets=args.kid_subsets,
        prdc_k=args.prdc_k,
        grid=args.grid,
        seed=args.seed,
    )
    if spaces:
        from jaxsynth.eval.spaces import metrics_in_spaces

        per_space = {"fd" for m in wanted if m == "fid"} | (wanted & {"kid", "prdc"})
        result.update(
            metrics_in_spaces(
                real,
                fake,
                spaces,
                metrics=per_space,
                cache_dir=args.cache_dir,
                kid_subset_size=args.kid_subset_size,
                kid_subsets=args.kid_subsets,
                prdc_k=args.prdc_k,
                seed=args.seed,
            )
        )
    result["counts"] = {
        "real": len(real),
        "fake": len(fake),
        **({"train": len(train)} if train is not None else {}),
    }
    result["image_size"] = [int(real.shape[1]), int(real.shape[2])]
    result["resized"] = r_resized + f_resized + t_resized
    result["skipped"] = skipped
    # strict JSON: a non-finite value (PSNR of identical images is +inf) is written as null and
    # listed in "nonfinite" ("psnr.mean=inf"), never as a bare Infinity strict parsers reject
    result, nonfinite = strict_json(json.loads(json.dumps(result, default=_jsonable)))
    if nonfinite:
        result["nonfinite"] = nonfinite
    text = json.dumps(result, indent=None, allow_nan=False)
    print(text)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
    return 0


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
