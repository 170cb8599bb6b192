"""FD / KID / PRDC in several named feature spaces at once.

Why: a distance between image sets is only meaningful with its feature space named, and one
space can be blind to what another sees (the tumour-vs-normal CNN ignores stroma fibres; a
self-supervised or pathology-foundation encoder does not). Every number here is keyed by the
space: `fd_<name>`, `kid_<name>`, `prdc_<name>`; `feature_spaces` maps each name to the
extractor id (which carries the weights' hash). "fd" rather than "fid": the Fréchet distance
is FID only in Inception features.

Extractors are passed in (see `jaxsynth.eval.extractors`); the real set's features are cached
per extractor id, since every generator is compared with the same real set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from jaxsynth.eval import fid as fid_mod
from jaxsynth.eval import kid as kid_mod
from jaxsynth.eval import prdc as prdc_mod

Extractor = Callable[[np.ndarray], np.ndarray]


def metrics_in_spaces(
    real: np.ndarray,
    fake: np.ndarray,
    extractors: Mapping[str, Extractor],
    *,
    metrics: set[str] = frozenset({"fd", "kid", "prdc"}),
    cache_dir: str | None = None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    prdc_k: int = 5,
    seed: int = 0,
    features_out: dict | None = None,
) -> dict:
    """{fd_<n>, kid_<n>, prdc_<n>, feature_spaces} for uint8 image sets. `features_out`, when
    given, receives {name: (f_real, f_fake)} for callers that reuse them (memorisation)."""
    out: dict = {"feature_spaces": {}}
    for name, ext in extractors.items():
        ext_id = getattr(ext, "id", name)
        out["feature_spaces"][name] = ext_id
        f_real = fid_mod.cached_features(real, ext, ext_id, cache_dir)
        f_fake = np.asarray(ext(fake))
        if features_out is not None:
            features_out[name] = (f_real, f_fake)
        if "fd" in metrics:
            out[f"fd_{name}"] = fid_mod.fid_from_features(f_real, f_fake)
        if "kid" in metrics:
            out[f"kid_{name}"] = kid_mod.kid(f_real, f_fake, kid_subset_size, kid_subsets, seed)
        if "prdc" in metrics:
            k = min(prdc_k, len(real) - 1, len(fake) - 1)
            out[f"prdc_{name}"] = prdc_mod.prdc(f_real, f_fake, k) if k >= 1 else None
    return out
