"""FID during training: the feature extractor and reference statistics the engine's periodic
hook uses (`train.fid_every`).

Why a second feature space: FID proper needs pytorch-fid's Inception weights, which the user
supplies as a local file (`train.inception_weights`; nothing downloads). Without them the hook
uses "domain" features: the penultimate layer of paper 000's CNN trained for a few epochs on the
run's own TRAINING split (all classes; the held-out images are never trained on), the same
space as the study's "domain FID". Its values are not comparable with published FIDs, only
along one run and between runs on the same data: the metric key says which one it is
(`fid_inception` or `fid_domain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class FeatureData:
    """Training-split images of ALL classes (and validation images) for the domain extractor."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


def domain_classifier(data: FeatureData, *, epochs: int = 5, seed: int = 0):
    """Paper 000's CNN trained on `data` (a few seconds at 32-64 px): (variables, model)."""
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


class FidMonitor:
    """Reference statistics of the held-out images, computed once; `__call__(fake)` -> FID."""

    def __init__(self, extractor: Any, heldout: np.ndarray):
        from jaxsynth.eval import fid

        if len(heldout) < 2:
            raise ValueError("FID needs at least two held-out images")
        self.extractor = extractor
        self.key = "fid_inception" if extractor.id.startswith("inception") else "fid_domain"
        self._mu, self._sigma = fid.statistics(extractor(heldout))

    def __call__(self, fake: np.ndarray) -> float:
        from jaxsynth.eval import fid

        mu, sigma = fid.statistics(self.extractor(fake))
        return float(fid.frechet_distance(self._mu, self._sigma, mu, sigma))


def build_fid_monitor(settings, heldout: np.ndarray, feature_data: FeatureData | None):
    """Inception features when `settings.inception_weights` is set, else domain features."""
    weights = str(settings.get("inception_weights", "") or "")
    if weights:
        from jaxsynth.eval.features import InceptionExtractor

        extractor = InceptionExtractor(weights)
    elif feature_data is not None:
        extractor = domain_extractor(feature_data)
    else:
        return None
    return FidMonitor(extractor, heldout)
