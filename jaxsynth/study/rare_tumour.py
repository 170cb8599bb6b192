"""`jaxsynth run`: the end-to-end rare-tumour study as a list of cached stages.

split → original-arm classifiers (they also give the "domain" feature extractor) → for each
generator and generator seed k (`study.generator_seeds`): train on the training split only
(`gen_<g>_g<k>`) → sample synthetic minority tiles (`sample_<g>_g<k>`) → memorisation filter +
image metrics (`synth_<g>_g<k>`) → the arm family (generator arm, variants, controls) ×
classifier seeds (`arms_<g>_g<k>`, `jaxsynth.study.families`) → report (results.json/csv,
report.md with verdicts, PNGs).

Every stage is cached by the config keys it reads (`jaxsynth.study.stages`), so a killed run
continues at the first unfinished stage, and changing, say, `gen.dcgan.num_steps` reruns only
DCGAN's stages, its arms and the report. The ratio sweep (`jaxsynth.study.sweep`) reuses the
same split, generator and classifier stages.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np

from jaxsynth.data.split import StudySplit, load_or_build_split
from jaxsynth.errors import UserError
from jaxsynth.study import arms as arms_lib
from jaxsynth.study.stages import Stage, StageContext, StageRunner

DATA_KEYS = ("seed", "image_size", "data")
CLASSIFIER_KEYS = (
    "classifier.model",
    "classifier.epochs",
    "classifier.batch_size",
    "classifier.lr",
    "classifier.class_weights",
)


def enabled_generators(config: ml_collections.ConfigDict) -> list[str]:
    gens = list(config.generators)
    for g in gens:
        if g not in config.gen:
            raise UserError(f"generators: '{g}' has no settings under gen.{g}")
    if config.sd.model_path and "sd" not in gens:
        gens.append("sd")
    return gens


def generator_seeds(config: ml_collections.ConfigDict) -> list[int]:
    seeds = list(config.study.generator_seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(
            f"study.generator_seeds={tuple(seeds)}: need distinct seeds (one, or 3+ for the "
            "generator's variance in the intervals)"
        )
    return seeds


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


def split_stage(workdir: Path) -> Stage:
    def fn(ctx: StageContext) -> dict:
        split = study_split(ctx.config, workdir)
        return {
            "counts": {
                n: np.bincount(split.split(n).labels, minlength=len(split.class_names)).tolist()
                for n in ("train", "val", "test")
            },
            "class_names": list(split.class_names),
            "skipped": split.manifest["skipped"]["skipped"],
        }

    return Stage("split", fn, config_keys=DATA_KEYS)


# An arm builder gets the split and the stage context, and returns the arm's training data or
# a string saying why the arm cannot be trained.
ArmBuilder = Callable[[StudySplit, StageContext], "arms_lib.ArmData | str"]


def classifier_stage(
    workdir: Path,
    arm_name: str,
    seed: int,
    build_arm: ArmBuilder,
    inputs: tuple[str, ...] = ("split",),
    extra_keys: tuple[str, ...] = (),
) -> Stage:
    """Train + score the classifier of one (arm, seed); cached like every stage."""

    def fn(ctx: StageContext) -> dict:
        from jaxsynth.study.generators import save_params

        split = study_split(ctx.config, workdir)
        arm = build_arm(split, ctx)
        if isinstance(arm, str):
            return {"arm": arm_name, "seed": seed, "skipped": arm}
        result, params = arms_lib.train_and_score(arm, split, ctx.config.classifier, seed)
        save_params(ctx.dir / "classifier.msgpack", params)
        return {**result, "arm": arm_name}

    return Stage(
        f"arm_{arm_name}_s{seed}",
        fn,
        config_keys=CLASSIFIER_KEYS + DATA_KEYS + extra_keys,
        inputs=inputs,
        extra_key=f"seed={seed}",
    )


def original_arm(split: StudySplit, ctx: StageContext):
    return arms_lib.original_arm(split)


def gsuffix(gseed: int) -> str:
    """Stage-name suffix of generator seed `gseed`: `gen_dcgan_g0`, `synth_dcgan_g0`, ..."""
    return f"_g{gseed}"


def filtered_synthetic(ctx: StageContext, gen: str, gseed: int | None = None) -> np.ndarray:
    """The memorisation-filtered synthetic tiles of `gen` (first generator seed by default)."""
    from jaxsynth.study.generators import load_filtered

    k = generator_seeds(ctx.config)[0] if gseed is None else gseed
    return load_filtered(ctx.input_dir(f"synth_{gen}{gsuffix(k)}"))


def generator_stages(workdir: Path, gen: str, feature_arm: str, gseed: int = 0) -> list[Stage]:
    """Train `gen` (seed study.seed + gseed) on the training split, sample it, filter + score."""
    from jaxsynth.study import generators as gen_lib

    sd_keys = ("sd",) if gen == "sd" else ()
    sfx, extra = gsuffix(gseed), f"gseed={gseed}"
    return [
        Stage(
            f"gen_{gen}{sfx}",
            gen_lib.train_stage(gen, workdir, gseed),
            config_keys=DATA_KEYS + (f"gen.{gen}",) + sd_keys,
            inputs=("split",),
            extra_key=extra,
        ),
        Stage(
            f"sample_{gen}{sfx}",
            gen_lib.sample_stage(gen, workdir, gseed, sfx),
            config_keys=("synthetic.num",) + sd_keys,
            inputs=(f"gen_{gen}{sfx}",),
            extra_key=extra,
        ),
        Stage(
            f"synth_{gen}{sfx}",
            gen_lib.quality_stage(gen, workdir, sfx),
            config_keys=("synthetic.memorization_filter", "eval.inception_weights", "eval.tsne")
            + DATA_KEYS,
            inputs=("split", f"sample_{gen}{sfx}", feature_arm),
            extra_key=extra,
        ),
    ]


def foundation_stages(config: ml_collections.ConfigDict, workdir: Path) -> list[Stage]:
    """Split, original-arm classifiers, and every enabled generator's stages per generator
    seed."""
    seeds = classifier_seeds(config)
    stages = [split_stage(workdir)]
    stages += [classifier_stage(workdir, "original", s, original_arm) for s in seeds]
    feature_arm = f"arm_original_s{seeds[0]}"
    for g in enabled_generators(config):
        for k in generator_seeds(config):
            stages += generator_stages(workdir, g, feature_arm, k)
    return stages


def build_stages(config: ml_collections.ConfigDict, workdir: Path) -> list[Stage]:
    from jaxsynth.study import report as report_lib
    from jaxsynth.study.families import CONTROL_KINDS, family_stage

    seeds = classifier_seeds(config)
    gens = enabled_generators(config)
    gseeds = generator_seeds(config)
    bad = [k for k in config.study.controls if k not in CONTROL_KINDS]
    if bad:
        raise UserError(f"study.controls: unknown {bad} (choose from {', '.join(CONTROL_KINDS)})")
    stages = foundation_stages(config, workdir)
    feature_arm = f"arm_original_s{seeds[0]}"
    for g in gens:
        for k in gseeds:
            stages.append(
                family_stage(
                    workdir,
                    g,
                    k,
                    seeds,
                    inputs=("split", f"synth_{g}{gsuffix(k)}", feature_arm),
                    keys=CLASSIFIER_KEYS + DATA_KEYS + ("classifier.seeds",),
                )
            )
    arm_names = [st.name for st in stages if st.name.startswith(("arm_", "arms_"))]
    per_gen = [f"{kind}_{g}{gsuffix(k)}" for g in gens for k in gseeds for kind in ("gen", "synth")]
    stages.append(
        Stage(
            "report",
            report_lib.report_stage(workdir),
            config_keys=(
                "eval.bootstrap",
                "eval.tsne",
                "study.verdict_metric",
                "study.threshold_bootstrap",
            ),
            inputs=("split", *per_gen, *arm_names),
        )
    )
    return stages


def run_stages(stages: list[Stage], config: ml_collections.ConfigDict, workdir: Path) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return StageRunner(workdir, config).run(stages)


def run_study(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    workdir = Path(workdir)
    results = run_stages(build_stages(config, workdir), config, workdir)
    print(results["report"].get("console_table", ""), flush=True)
    print(f"report: {workdir / 'report.md'}", file=sys.stderr)
    return results
