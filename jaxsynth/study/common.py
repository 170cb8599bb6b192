"""What every stage builder of the studies reads: the seeds, the split (the split stage's
output), the minority label and the original arm's stage dir.

The lowest module of the study package (it imports nothing else from it), so `generators`,
`families`, `rare_tumour`, `sweep` and `report` share it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from jaxsynth.data.split import StudySplit, load_split
from jaxsynth.errors import UserError
from jaxsynth.study.stages import StageContext

SPLIT_DIR = "split"  # inside the split stage's directory


def classifier_seeds(config: ml_collections.ConfigDict) -> list[int]:
    seeds = list(config.classifier.seeds)
    if not seeds:
        raise UserError("classifier.seeds: need at least one seed (3 or more for CIs)")
    return seeds


def generator_seeds(config: ml_collections.ConfigDict) -> list[int]:
    seeds = list(config.study.generator_seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(
            f"study.generator_seeds={tuple(seeds)}: need distinct seeds (one, or 3+ for the "
            "generator's variance in the intervals)"
        )
    return seeds


def gsuffix(gseed: int) -> str:
    """Stage-name suffix of generator seed `gseed`: `gen_dcgan_g0`, `synth_dcgan_g0`, ..."""
    return f"_g{gseed}"


def load_stage_split(stage_dir: Path) -> StudySplit:
    """The split saved in the split stage's directory. Its pixels are not re-hashed here: the
    stage runner verified `arrays.npz` against its recorded SHA-256 before any dependant ran."""
    return load_split(Path(stage_dir) / SPLIT_DIR, check_pixels=False)


def study_split(ctx: StageContext) -> StudySplit:
    """The study split, read once per run from the split stage (an input of every stage that
    calls this)."""
    return ctx.load("split", load_stage_split)


def original_dir(ctx: StageContext) -> Path:
    """The stage dir of the first original-arm classifier (feature extractor, filter)."""
    return ctx.input_dir(f"arm_original_s{classifier_seeds(ctx.config)[0]}")


def minority_label(config, split) -> int:
    return split.label_of(config.data.minority_class)
