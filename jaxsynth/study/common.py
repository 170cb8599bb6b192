"""What every stage builder of the studies reads: the classifier seeds, the split, the minority
label, the original arm's stage dir and a generator's filtered synthetic tiles.

A module of its own below `rare_tumour`, `families` and `sweep`, so those can share it without
importing each other.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from jaxsynth.data.split import StudySplit, load_or_build_split
from jaxsynth.errors import UserError
from jaxsynth.study.generators import generator_seeds, gsuffix
from jaxsynth.study.stages import StageContext


def original_dir(ctx: StageContext) -> Path:
    """The stage dir of the first original-arm classifier (feature extractor, filter)."""
    return ctx.input_dir(f"arm_original_s{classifier_seeds(ctx.config)[0]}")


def classifier_seeds(config: ml_collections.ConfigDict) -> list[int]:
    seeds = list(config.classifier.seeds)
    if not seeds:
        raise UserError("classifier.seeds: need at least one seed (3 or more for CIs)")
    return seeds


def study_split(config: ml_collections.ConfigDict, workdir: Path) -> StudySplit:
    return load_or_build_split(config, workdir, progress=False)


def minority_label(config, split) -> int:
    return split.label_of(config.data.minority_class)


def filtered_synthetic(ctx: StageContext, gen: str, gseed: int | None = None) -> np.ndarray:
    """The memorisation-filtered synthetic tiles of `gen` (first generator seed by default)."""
    from jaxsynth.study.generators import load_filtered

    k = generator_seeds(ctx.config)[0] if gseed is None else gseed
    return load_filtered(ctx.input_dir(f"synth_{gen}{gsuffix(k)}"))
