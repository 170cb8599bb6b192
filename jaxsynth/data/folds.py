"""K-fold cross-validation splits of the study (Poonam et al.'s 5-fold design): `study.cv_folds`.

The pool is the tiles the single split would use: per class, the config's test + val + train
counts (`data.split`), drawn by `build_study_split` in the same seeded order (so K-fold CV works
on the same labelled data as one split, costs K × one study with the same training-set size,
and a source far larger than the study, such as PCam, is not read whole). Raise the counts to
give CV more data.

The pool is partitioned into K stratified folds by the split seed: per class, a seeded
permutation is dealt round robin over the folds (the start rotating with the class, so fold
sizes differ by at most one per class and in total). Fold k's split is then:

* **test**: fold k — real tiles only, fixed before anything of fold k trains;
* **val / train**: the other K − 1 folds, per class in the config's val : train proportions
  (a seeded draw per fold).

Every pool tile is in exactly one fold's test part. Each fold split is an ordinary
`StudySplit` (its manifest lists test, val and train with pixel hashes), so the leakage guard
(`assert_no_leakage`) that every generator and augmented arm calls checks fold k's test and
validation tiles in fold k's stages; ids and pixels are checked disjoint across the fold's
three parts, as in the single split.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections
import numpy as np

from jaxsynth.config import config_to_dict
from jaxsynth.data.split import (
    SPLIT_ORDER,
    StudySplit,
    _check_disjoint,
    _validate_counts,
    build_study_split,
    open_study_source,
)
from jaxsynth.data.types import ImageSource, SkipReport
from jaxsynth.errors import UserError

FIELD = "study.cv_folds"


def pool_counts(counts: Mapping, class_names: tuple[str, ...]) -> dict[str, int]:
    """Per class: test + val + train of the config's split counts (the CV pool)."""
    want = _validate_counts(counts, class_names)
    return {c: sum(want[s].get(c, 0) for s in SPLIT_ORDER) for c in class_names}


def check_num_folds(num_folds, pool: Mapping[str, int]) -> int:
    """`num_folds` as an int: 0 (the single split) or 2 ≤ K ≤ the smallest class in the pool
    (every fold's test part must hold at least one tile of every class)."""
    if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)):
        raise UserError(f"{FIELD}={num_folds!r}: must be an integer (0 = one split, or K >= 2)")
    k = int(num_folds)
    if k == 0:
        return 0
    if k < 2:
        raise UserError(f"{FIELD}={k}: must be 0 (one split) or K >= 2 folds")
    present = {c: n for c, n in pool.items() if n > 0}
    smallest = min(present, key=present.get)
    if k > present[smallest]:
        raise UserError(
            f"{FIELD}={k}: more folds than tiles of class '{smallest}' in the pool "
            f"({present[smallest]} = its test + val + train counts in data.split)"
        )
    return k


def assign_folds(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """Fold index of every tile: per class a seeded permutation dealt round robin, the start
    rotating with each class so that fold sizes differ by ≤ 1 per class and in total."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, num_folds])
    folds = np.full(len(labels), -1, np.int64)
    start = 0
    for c in np.unique(labels):
        perm = rng.permutation(np.flatnonzero(labels == c))
        folds[perm] = (np.arange(len(perm)) + start) % num_folds
        start += len(perm)
    return folds


def fold_split(
    pool: StudySplit, counts: Mapping, *, num_folds: int, fold: int, seed: int
) -> StudySplit:
    """Fold `fold`'s StudySplit of `pool` (all tiles in `pool.train`): test = the fold, val and
    train from the rest in the config's val : train proportions per class."""
    names = pool.class_names
    want = _validate_counts(counts, names)
    tiles = pool.train
    folds = assign_folds(tiles.labels, num_folds, seed)
    rng = np.random.default_rng([seed, num_folds, fold])
    parts: dict[str, list[int]] = {"test": [], "val": [], "train": []}
    for c, cname in enumerate(names):
        in_class = tiles.labels == c
        parts["test"] += np.flatnonzero(in_class & (folds == fold)).tolist()
        rest = rng.permutation(np.flatnonzero(in_class & (folds != fold)))
        v, t = want["val"].get(cname, 0), want["train"].get(cname, 0)
        n_val = int(np.floor(len(rest) * v / (v + t) + 0.5)) if v + t else 0
        parts["val"] += rest[:n_val].tolist()
        parts["train"] += rest[n_val:].tolist()
    out = {name: tiles.select(np.asarray(idx, np.int64)) for name, idx in parts.items()}
    _check_disjoint(out)
    manifest = {
        **{k: v for k, v in pool.manifest.items() if k not in ("counts", "splits")},
        "counts": {
            s: {n: int((out[s].labels == c).sum()) for c, n in enumerate(names)}
            for s in SPLIT_ORDER
        },
        "splits": {
            s: [
                {"id": i, "label": int(lb), "sha256": h}
                for i, lb, h in zip(out[s].ids, out[s].labels, out[s].hashes)
            ]
            for s in SPLIT_ORDER
        },
        "cv": {
            "num_folds": num_folds,
            "fold": fold,
            "pool": {n: int((tiles.labels == c).sum()) for c, n in enumerate(names)},
        },
    }
    return StudySplit(
        train=out["train"], val=out["val"], test=out["test"], class_names=names, manifest=manifest
    )


def build_fold_split(
    source: ImageSource,
    *,
    seed: int,
    image_size: int,
    counts: Mapping,
    num_folds: int,
    fold: int,
    report: SkipReport | None = None,
) -> StudySplit:
    """Fold `fold` of `num_folds` of the pool `counts` describes (see the module doc)."""
    names = tuple(source.class_names)
    k = check_num_folds(num_folds, pool_counts(counts, names))
    if not 0 <= fold < k:
        raise ValueError(f"fold {fold} of {k}")
    pool = build_study_split(
        source,
        seed=seed,
        image_size=image_size,
        counts={"train": pool_counts(counts, names)},
        report=report,
    )
    return fold_split(pool, counts, num_folds=k, fold=fold, seed=seed)


def build_cv_split(config: ml_collections.ConfigDict, fold: int) -> StudySplit:
    """Fold `fold` of `study.cv_folds` for a study config (`seed`, `image_size`, `data`)."""
    source, report = open_study_source(config)
    return build_fold_split(
        source,
        seed=config.seed,
        image_size=config.image_size,
        counts=config_to_dict(config.data.split),
        num_folds=config.study.cv_folds,
        fold=fold,
        report=report,
    )
