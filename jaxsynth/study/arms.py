"""Classifier arms of the study: which images each arm trains on, and one (arm, seed) run.

Arms (paper 000's table, plus paper 004's synthetic-only arm):

* `original`: the real training split only (e.g. 80 tumour + 800 normal).
* `<gen>`: the real training split plus the generator's synthetic minority images.
* `<gen>_synthetic_only`: the real majority class plus ONLY synthetic minority images — does
  the generator carry the class on its own?

Every arm validates (early stopping, threshold) on the same real validation split and is scored
on the same real-only test split, so arms are paired on test images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsynth.data.split import StudySplit, assert_no_leakage
from jaxsynth.models.classifier import build_from_config as build_classifier


@dataclasses.dataclass
class ArmData:
    name: str
    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray  # int32
    is_synthetic: np.ndarray  # bool, per image
    generator: str | None

    @property
    def counts(self) -> dict[str, int]:
        return {
            "real": int((~self.is_synthetic).sum()),
            "synthetic": int(self.is_synthetic.sum()),
            "minority": int(self.labels.sum()),
            "total": len(self.labels),
        }


def original_arm(split: StudySplit) -> ArmData:
    tr = split.train
    return ArmData("original", tr.images, tr.labels, np.zeros(len(tr), bool), None)


def augmented_arm(
    split: StudySplit, generator: str, synthetic: np.ndarray, minority: int, synthetic_only: bool
) -> ArmData:
    """Real training split (+ or without its minority images) plus `synthetic` minority images."""
    tr = split.train
    keep = np.ones(len(tr), bool) if not synthetic_only else tr.labels != minority
    images = np.concatenate([tr.images[keep], synthetic]) if len(synthetic) else tr.images[keep]
    labels = np.concatenate([tr.labels[keep], np.full(len(synthetic), minority, np.int32)])
    is_syn = np.concatenate([np.zeros(keep.sum(), bool), np.ones(len(synthetic), bool)])
    name = f"{generator}_synthetic_only" if synthetic_only else generator
    arm = ArmData(name, images, labels.astype(np.int32), is_syn, generator)
    # Synthetic images must not be copies of held-out real images either.
    assert_no_leakage(split, arm.images, f"classifier arm '{name}'")
    return arm


def mix_arm(
    split: StudySplit,
    generator: str,
    synthetic: np.ndarray,
    minority: int,
    fraction: float,
    rng: np.random.Generator,
) -> ArmData:
    """Minority class with `fraction` of its images synthetic, the minority count held fixed.

    The ratio study (paper 002): the number of minority training images stays at the real
    count n; a fraction f of them is replaced by synthetic images (f = 1: synthetic only). With
    f = 0 this is the original arm. Needs at least round(f·n) synthetic images.
    """
    tr = split.train
    minority_idx = np.flatnonzero(tr.labels == minority)
    n = len(minority_idx)
    n_syn = int(round(fraction * n))
    if n_syn > len(synthetic):
        raise ValueError(
            f"ratio {fraction:.2f} needs {n_syn} synthetic images, generator gave {len(synthetic)}"
        )
    keep_real = rng.permutation(minority_idx)[: n - n_syn]
    majority = tr.labels != minority
    syn = synthetic[rng.permutation(len(synthetic))[:n_syn]]
    images = np.concatenate([tr.images[majority], tr.images[keep_real], syn])
    labels = np.concatenate(
        [tr.labels[majority], tr.labels[keep_real], np.full(n_syn, minority, np.int32)]
    )
    is_syn = np.concatenate([np.zeros(majority.sum() + len(keep_real), bool), np.ones(n_syn, bool)])
    arm = ArmData(f"{generator}@{fraction:.2f}", images, labels.astype(np.int32), is_syn, generator)
    assert_no_leakage(split, arm.images, f"classifier arm '{arm.name}'")
    return arm


def train_and_score(arm: ArmData, split: StudySplit, cfg, seed: int) -> dict:
    """Train the configured classifier on `arm`, threshold on real val, predict real test."""
    from jaxsynth.eval.classification import binary_metrics, choose_threshold
    from jaxsynth.tasks.classify import fit_classifier, predict_proba

    model = build_classifier(cfg, split.test.images.shape[1])
    params, history = fit_classifier(
        arm.images,
        arm.labels,
        val_images=split.val.images,
        val_labels=split.val.labels,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=seed,
        class_weights=cfg.class_weights,
        model=model,
    )
    val_probs = predict_proba(params, split.val.images, model=model)
    threshold = choose_threshold(split.val.labels, val_probs)
    test_probs = predict_proba(params, split.test.images, model=model)
    return {
        "arm": arm.name,
        "seed": seed,
        "counts": arm.counts,
        "history": history,
        "threshold": threshold,
        "test_probs": test_probs.tolist(),
        "val_probs": val_probs.tolist(),
        "test_metrics": binary_metrics(split.test.labels, test_probs, threshold),
    }, params


def train_and_score_pairs(
    pairs: list[tuple[ArmData, int]], split: StudySplit, cfg
) -> list[tuple[dict, dict]]:
    """`train_and_score(arm, split, cfg, seed)` for every (arm, seed) pair, trained by
    `fit_classifiers` (the engine, one compiled step shared by all) and scored together (one
    vmapped prediction on GPU/TPU); same dicts, same order."""
    from jaxsynth.eval.classification import binary_metrics, choose_threshold
    from jaxsynth.tasks.classify_many import fit_classifiers, predict_proba_many

    if not pairs:
        return []
    model = build_classifier(cfg, split.test.images.shape[1])
    fitted = fit_classifiers(
        [(arm.images, arm.labels) for arm, _ in pairs],
        [seed for _, seed in pairs],
        val_images=split.val.images,
        val_labels=split.val.labels,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        class_weights=cfg.class_weights,
        model=model,
    )
    weights = [params for params, _ in fitted]
    val_probs = predict_proba_many(weights, split.val.images, model=model)
    test_probs = predict_proba_many(weights, split.test.images, model=model)
    out = []
    for i, ((arm, seed), (params, history)) in enumerate(zip(pairs, fitted, strict=True)):
        threshold = choose_threshold(split.val.labels, val_probs[i])
        result = {
            "arm": arm.name,
            "seed": seed,
            "counts": arm.counts,
            "history": history,
            "threshold": threshold,
            "test_probs": test_probs[i].tolist(),
            "val_probs": val_probs[i].tolist(),
            "test_metrics": binary_metrics(split.test.labels, test_probs[i], threshold),
        }
        out.append((result, params))
    return out


def train_and_score_many(
    arms: list[ArmData], split: StudySplit, cfg, seeds: list[int]
) -> list[tuple[dict, dict]]:
    """`train_and_score` for every arm × seed, in one call; returns
    `(result_dict, variables)` in (arm, seed) order (arm-major)."""
    return train_and_score_pairs([(arm, int(s)) for arm in arms for s in seeds], split, cfg)
