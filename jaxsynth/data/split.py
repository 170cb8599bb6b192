"""The study split: real-only test and validation carved out first, then the training split.

Paper 000 let its GAN train on images that later landed in its test split, and put synthetic
images into its test sets. Here the order is fixed: from a source, a seed and per-class counts,
the **test** split is drawn first, then **val**, then **train**, stratified by class and without
overlap. Every tile is resized to the working size once, and a manifest (ids, labels, SHA-256 of
the resized pixels per split) is written next to the arrays. Any later stage that trains a
generator calls `assert_no_leakage` with its training images, which fails loudly if a single
validation or test image is among them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image

from jaxsynth.config import config_hash, config_to_dict
from jaxsynth.data.types import CorruptImage, ImageSource, SkipReport, pixel_hash
from jaxsynth.errors import UserError

SPLIT_ORDER = ("test", "val", "train")  # carving order: test first, always real only
MANIFEST_VERSION = 1


class LeakageError(UserError):
    """A validation/test image was found in data that a generator or classifier trains on."""


@dataclasses.dataclass
class SplitArrays:
    """One split, materialised: uint8 images (N, H, W, 3), int32 labels, ids, pixel hashes."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    hashes: list[str]
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, keep: np.ndarray) -> SplitArrays:
        """Subset by a boolean mask or index array."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return SplitArrays(
            images=self.images[idx],
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx],
            hashes=[self.hashes[i] for i in idx],
            masks=None if self.masks is None else self.masks[idx],
        )

    def of_classes(self, labels: list[int] | tuple[int, ...]) -> SplitArrays:
        return self.select(np.isin(self.labels, np.asarray(labels)))

    def arrays(self) -> dict[str, np.ndarray]:
        """The dict `jaxsynth.data.pipeline.make_loader` takes."""
        out = {"image": self.images, "label": self.labels}
        if self.masks is not None:
            out["mask"] = self.masks
        return out


@dataclasses.dataclass
class StudySplit:
    train: SplitArrays
    val: SplitArrays
    test: SplitArrays
    class_names: tuple[str, ...]
    manifest: dict

    def split(self, name: str) -> SplitArrays:
        return getattr(self, name)

    def label_of(self, class_name: str) -> int:
        if class_name not in self.class_names:
            raise UserError(
                f"unknown class '{class_name}' (classes: {', '.join(self.class_names)})"
            )
        return self.class_names.index(class_name)


def resize_tile(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 RGB tile to size×size (area averaging down, bicubic up)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    down = image.shape[0] > size
    method = Image.Resampling.BOX if down else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(image).resize((size, size), method), dtype=np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape[0] == size and mask.shape[1] == size:
        return mask
    img = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    return (np.asarray(img.resize((size, size), Image.Resampling.NEAREST)) > 127).astype(np.uint8)


def _validate_counts(counts: Mapping, class_names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split in SPLIT_ORDER:
        per_class = dict(counts.get(split, {}) or {})
        for cname, n in per_class.items():
            if cname not in class_names:
                raise UserError(
                    f"data.split.{split}.{cname}: no class '{cname}' in the source "
                    f"(classes: {', '.join(class_names)})"
                )
            if not isinstance(n, int) or n < 0:
                raise UserError(f"data.split.{split}.{cname}: count must be an integer >= 0")
        out[split] = {c: int(n) for c, n in per_class.items()}
    if not any(out["train"].values()):
        raise UserError("data.split.train: asks for no training images")
    return out


def build_study_split(
    source: ImageSource,
    *,
    seed: int,
    image_size: int,
    counts: Mapping,
    report: SkipReport | None = None,
    progress: bool = False,
) -> StudySplit:
    """Draw test, then val, then train (per-class counts), decode, resize, hash; no overlap.

    Unusable tiles are skipped, recorded in `report` with the reason, and replaced by the next
    candidate of the same class; running out of usable tiles in a class is a one-line error.
    """
    from jaxsynth.data.sources import load_with_conversions

    report = report if report is not None else SkipReport()
    class_names = tuple(source.class_names)
    want = _validate_counts(counts, class_names)
    rng = np.random.default_rng(seed)
    labels = np.fromiter((source.label_of(i) for i in range(len(source))), np.int64, len(source))
    queues = {}
    for c, cname in enumerate(class_names):
        idx = np.flatnonzero(labels == c)
        queues[cname] = collections.deque(rng.permutation(idx).tolist())

    out: dict[str, SplitArrays] = {}
    manifest_splits: dict[str, list] = {}
    total = sum(sum(v.values()) for v in want.values())
    done = 0
    for split in SPLIT_ORDER:
        images, lbls, ids, hashes, masks = [], [], [], [], []
        for cname, n in want[split].items():
            taken = 0
            queue = queues[cname]
            while taken < n:
                if not queue:
                    raise UserError(
                        f"data.split.{split}.{cname}: asked for {n} images but class '{cname}' "
                        f"of source {source.name} has only {taken} usable left "
                        f"({len(report)} skipped so far)"
                    )
                i = int(queue.popleft())
                try:
                    rec, conversions = load_with_conversions(source, i)
                except CorruptImage as e:
                    report.skip(source.id_of(i), str(e))
                    continue
                for what in conversions:
                    report.convert(rec.id, what)
                img = resize_tile(rec.image, image_size)
                images.append(img)
                lbls.append(class_names.index(cname))
                ids.append(rec.id)
                hashes.append(pixel_hash(img))
                if source.has_masks and rec.mask is not None:
                    masks.append(resize_mask(rec.mask, image_size))
                taken += 1
                done += 1
                if progress and done % 500 == 0:
                    print(f"  split: {done}/{total} tiles", file=sys.stderr, flush=True)
        s = image_size
        arr = SplitArrays(
            images=np.stack(images) if images else np.zeros((0, s, s, 3), np.uint8),
            labels=np.asarray(lbls, np.int32),
            ids=ids,
            hashes=hashes,
            masks=(np.stack(masks) if masks else np.zeros((0, s, s), np.uint8))
            if source.has_masks
            else None,
        )
        out[split] = arr
        manifest_splits[split] = [
            {"id": i, "label": int(lb), "sha256": h} for i, lb, h in zip(ids, lbls, hashes)
        ]
    _check_disjoint(out)
    manifest = {
        "version": MANIFEST_VERSION,
        "source": source.name,
        "seed": seed,
        "image_size": image_size,
        "class_names": list(class_names),
        "counts": want,
        "order": list(SPLIT_ORDER),
        "splits": manifest_splits,
        "skipped": report.summary(),
    }
    return StudySplit(
        train=out["train"],
        val=out["val"],
        test=out["test"],
        class_names=class_names,
        manifest=manifest,
    )


def _check_disjoint(splits: Mapping[str, SplitArrays]) -> None:
    """Ids and pixel content must not repeat across splits (duplicates in a source included)."""
    seen_ids: dict[str, str] = {}
    seen_hash: dict[str, str] = {}
    for name in SPLIT_ORDER:
        for i, h in zip(splits[name].ids, splits[name].hashes):
            if i in seen_ids and seen_ids[i] != name:
                raise LeakageError(f"split: id {i} is in both {seen_ids[i]} and {name}")
            if h in seen_hash and seen_hash[h] != name:
                raise LeakageError(
                    f"split: image {i} in {name} has the same pixels as one in {seen_hash[h]} "
                    "(the source holds duplicates)"
                )
            seen_ids[i] = name
            seen_hash[h] = name


def assert_no_leakage(split: StudySplit | dict, images: np.ndarray, what: str) -> None:
    """Fail loudly if any val/test image of the study split is among `images` (uint8 NHWC).

    `split` is a StudySplit or its manifest dict. Call it with a generator's (or an augmented
    classifier arm's) training images before training starts.
    """
    manifest = split.manifest if isinstance(split, StudySplit) else split
    held_out = {}
    for name in ("val", "test"):
        for entry in manifest["splits"][name]:
            held_out[entry["sha256"]] = (name, entry["id"])
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError("assert_no_leakage expects uint8 images (N, H, W, 3)")
    hits = []
    for img in images:
        hit = held_out.get(pixel_hash(img))
        if hit is not None:
            hits.append(hit)
    if hits:
        names = ", ".join(f"{i} ({s})" for s, i in hits[:5])
        more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
        raise LeakageError(
            f"leakage: {len(hits)} held-out real image(s) are in {what}'s training data: "
            f"{names}{more}"
        )


# ---------------------------------------------------------------------------------------------
# Cached in the workdir


def source_options(config: ml_collections.ConfigDict) -> dict:
    """What `open_source` needs: the `data` group plus the top-level size and seed."""
    opts = config_to_dict(config.data)
    opts["image_size"] = config.image_size
    opts["seed"] = config.seed
    return opts


def split_key(config: ml_collections.ConfigDict) -> str:
    """Hash of everything the split depends on (not the model or training settings)."""
    d = config_to_dict(config)
    return config_hash({"data": d["data"], "seed": d["seed"], "image_size": d["image_size"]})


def save_split(split: StudySplit, directory: Path) -> None:
    """Write arrays + manifest atomically (a killed write never leaves a half split)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in SPLIT_ORDER:
        s = split.split(name)
        arrays[f"{name}_images"] = s.images
        arrays[f"{name}_labels"] = s.labels
        if s.masks is not None:
            arrays[f"{name}_masks"] = s.masks
    np.savez(tmp / "arrays.npz", **arrays)
    (tmp / "manifest.json").write_text(json.dumps(split.manifest, indent=1))
    if directory.exists():
        import shutil

        shutil.rmtree(directory)
    os.replace(tmp, directory)


def load_split(directory: Path, check_pixels: bool = True) -> StudySplit:
    """The split saved by `save_split`. `check_pixels` re-hashes every image against the
    manifest; a caller whose files were verified otherwise (the study's stage record holds the
    SHA-256 of `arrays.npz`) skips it."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path}: no study split manifest here")
    manifest = json.loads(manifest_path.read_text())
    with np.load(directory / "arrays.npz") as z:
        parts = {}
        for name in SPLIT_ORDER:
            entries = manifest["splits"][name]
            masks = z[f"{name}_masks"] if f"{name}_masks" in z else None
            parts[name] = SplitArrays(
                images=z[f"{name}_images"],
                labels=z[f"{name}_labels"],
                ids=[e["id"] for e in entries],
                hashes=[e["sha256"] for e in entries],
                masks=masks,
            )
    for name, s in parts.items():
        for img, h, i in zip(s.images, s.hashes, s.ids) if check_pixels else ():
            if pixel_hash(img) != h:
                raise UserError(f"{directory}: {name} image {i} does not match its manifest hash")
    return StudySplit(**parts, class_names=tuple(manifest["class_names"]), manifest=manifest)


def _why(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:200]


def load_or_build_split(
    config: ml_collections.ConfigDict, workdir: str | Path, *, progress: bool = True
) -> StudySplit:
    """The study split for `config`, cached under `<workdir>/split/<key>/` (`jaxsynth train`;
    the study keeps its split in its split stage instead)."""
    directory = Path(workdir) / "split" / split_key(config)
    if (directory / "manifest.json").is_file():
        try:
            return load_split(directory)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UserError) as e:
            # a damaged cache (deleted/truncated arrays, bad manifest): the split is a pure
            # function of the config, so rebuilding it gives the same images and hashes
            print(
                f"split: cache in {directory} is damaged ({_why(e)}); rebuilding", file=sys.stderr
            )
    split = build_split(config, progress=progress)
    save_split(split, directory)
    skipped = split.manifest["skipped"]["skipped"]
    if skipped:
        print(
            f"split: skipped {skipped} unusable input(s); see {directory / 'manifest.json'}",
            file=sys.stderr,
        )
    return split


def open_study_source(config: ml_collections.ConfigDict) -> tuple[ImageSource, SkipReport]:
    """The config's image source and a skip report holding what opening it already skipped
    (the single split and every cross-validation fold read the source this way)."""
    from jaxsynth.data.sources import open_source

    source = open_source(config.data.source, source_options(config))
    report = SkipReport()
    if hasattr(source, "skipped"):
        report.merge(source.skipped)
    return source, report


def build_split(config: ml_collections.ConfigDict, *, progress: bool = True) -> StudySplit:
    """The study split for `config` (`seed`, `image_size`, `data`), read from its source."""
    source, report = open_study_source(config)
    return build_study_split(
        source,
        seed=config.seed,
        image_size=config.image_size,
        counts=config_to_dict(config.data.split),
        report=report,
        progress=progress,
    )
