"""FID during training: the feature extractor and reference statistics the engine's periodic
hook uses (`train.fid_every`).

Why a second feature space: FID proper needs pytorch-fid's Inception weights, which the user
supplies as a local file (`train.inception_weights`; nothing downloads). Without them the hook
uses "domain" features: the penultimate layer of Rane 2026's CNN trained for a few epochs on the
run's own TRAINING split (all classes; the held-out images are never trained on; built by
`jaxsynth.tasks.domain`), the same space as the study's "domain FID". Its values are not
comparable with published FIDs, only along one run and between runs on the same data: the
metric key says which one it is (`fid_inception` or `fid_domain`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


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


def build_fid_monitor(settings, heldout: np.ndarray, domain_features: Callable[[], Any] | None):
    """Inception features when `settings.inception_weights` is set, else the extractor that
    `domain_features()` builds (the caller's: training it needs a trainer, which this layer does
    not import); None when neither is available."""
    weights = str(settings.get("inception_weights", "") or "")
    if weights:
        from jaxsynth.eval.features import InceptionExtractor

        extractor = InceptionExtractor(weights)
    elif domain_features is not None:
        extractor = domain_features()
    else:
        return None
    return FidMonitor(extractor, heldout)
