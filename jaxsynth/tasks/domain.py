"""Rane 2026's CNN trained on a run's real training split, as a "domain" feature space and a
real-trained judge of samples.

Metrics (eval layer) take feature and prediction functions as arguments; this module is where
they are made, because making them means training a classifier: the FID curve of `train()`
without Inception weights (`TrainData.domain_features`), and `ClassFidelity`'s judge.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass
class FeatureData:
    """Training-split images of ALL classes (and validation images) for the domain extractor."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


def domain_classifier(data: FeatureData, *, epochs: int = 5, seed: int = 0):
    """Rane 2026's CNN trained on `data` (a few seconds at 32-64 px): (variables, model)."""
    from jaxsynth.models.classifier import PaperCNN
    from jaxsynth.tasks.classify import fit_classifier

    if len(np.unique(data.train_labels)) < 2:
        raise ValueError("domain features need training images of at least two classes")
    variables, _ = fit_classifier(
        data.train_images,
        data.train_labels,
        val_images=data.val_images,
        val_labels=data.val_labels,
        epochs=epochs,
        seed=seed,
    )
    return variables, PaperCNN()


def domain_extractor(
    data: FeatureData | None = None, *, epochs: int = 5, seed: int = 0, trained=None
):
    """A `DomainExtractor` from `domain_classifier(data)`, or from an already `trained`
    (variables, model) pair."""
    from jaxsynth.eval.features import DomainExtractor

    variables, model = trained or domain_classifier(data, epochs=epochs, seed=seed)
    return DomainExtractor(
        lambda x: model.apply(variables, x, method=model.features), name="paper_cnn_train_split"
    )


def domain_features(data: FeatureData, **kwargs):
    """A zero-argument factory of `domain_extractor(data)`: what `TrainData.domain_features`
    takes, so the CNN is trained only if the run evaluates FID."""
    return functools.partial(domain_extractor, data, **kwargs)


def class_fidelity(
    split,
    *,
    inception_weights: str | None = None,
    minority: str = "tumour",
    epochs: int = 5,
    seed: int = 0,
):
    """`jaxsynth.eval.class_fidelity.ClassFidelity` judged by the CNN trained on `split`'s real
    training tiles, in that CNN's features (or Inception's, when weights are given)."""
    from jaxsynth.eval.class_fidelity import ClassFidelity
    from jaxsynth.eval.features import InceptionExtractor
    from jaxsynth.tasks.classify import predict_proba

    data = FeatureData(split.train.images, split.train.labels, split.val.images, split.val.labels)
    trained = domain_classifier(data, epochs=epochs, seed=seed)
    variables, model = trained
    extractor = (
        InceptionExtractor(inception_weights)
        if inception_weights
        else domain_extractor(trained=trained)
    )
    return ClassFidelity(
        split,
        p_minority=lambda images: predict_proba(variables, images, model=model),
        extractor=extractor,
        minority=minority,
    )
