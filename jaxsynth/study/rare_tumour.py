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

from jaxsynth.data.split import StudySplit, build_split, save_split
from jaxsynth.errors import UserError
from jaxsynth.study import arms as arms_lib
from jaxsynth.study.arm_group import ArmGroup
from jaxsynth.study.common import (
    SPLIT_DIR,
    classifier_seeds,
    generator_seeds,
    gsuffix,
    load_stage_split,
    study_split,
)
from jaxsynth.study.generators import QUALITY_KEYS, adapter, enabled_generators
from jaxsynth.study.stages import ALL_KEYS, Stage, StageContext, StageRunner

DATA_KEYS = ("seed", "image_size", "data")
CLASSIFIER_KEYS = (
    "classifier.model",
    "classifier.epochs",
    "classifier.batch_size",
    "classifier.lr",
    "classifier.class_weights",
)


def split_stage() -> Stage:
    """Carve the test, then the validation, then the training split from the source (real
    images only) and keep it in the stage's directory: every later stage reads it from there
    (`common.study_split`), so it is built once and verified by the stage record."""

    def fn(ctx: StageContext) -> dict:
        split = build_split(ctx.config, progress=False)
        save_split(split, ctx.dir / SPLIT_DIR)
        ctx.keep(load_stage_split, split)
        skipped = split.manifest["skipped"]["skipped"]
        if skipped:
            print(
                f"split: skipped {skipped} unusable input(s); see the split stage's "
                f"{SPLIT_DIR}/manifest.json",
                file=sys.stderr,
            )
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
    arm_name: str,
    seed: int,
    build_arm: ArmBuilder,
    inputs: tuple[str, ...] = ("split",),
    extra_keys: tuple[str, ...] = (),
    group: ArmGroup | None = None,
) -> Stage:
    """Train + score the classifier of one (arm, seed); cached like every stage. With a
    `group`, the group's first uncached stage trains all its members at once (vmapped)."""
    name = f"arm_{arm_name}_s{seed}"
    if group is not None:
        group.add(arm_name, seed, build_arm, name)

    def fn(ctx: StageContext) -> dict:
        from jaxsynth.study.generators import save_params

        split = study_split(ctx)
        if group is not None:
            result, params = group.result(name, split, ctx)
            if isinstance(result, str):
                return {"arm": arm_name, "seed": seed, "skipped": result}
        else:
            arm = build_arm(split, ctx)
            if isinstance(arm, str):
                return {"arm": arm_name, "seed": seed, "skipped": arm}
            result, params = arms_lib.train_and_score(arm, split, ctx.config.classifier, seed)
        save_params(ctx.dir / "classifier.msgpack", params)
        return {**result, "arm": arm_name}

    stage = Stage(
        name,
        fn,
        config_keys=CLASSIFIER_KEYS + DATA_KEYS + extra_keys,
        inputs=inputs,
        extra_key=f"seed={seed}",
    )
    return group.attach(stage) if group is not None else stage


def original_arm(split: StudySplit, ctx: StageContext):
    return arms_lib.original_arm(split)


def generator_stages(gen: str, feature_arm: str, gseed: int = 0) -> list[Stage]:
    """Train `gen` (seed study.seed + gseed) on the training split, sample it, filter + score;
    what each stage reads is declared by the generator's adapter (`generators.ADAPTERS`)."""
    from jaxsynth.study import generators as gen_lib

    kind = adapter(gen)
    sfx, extra = gsuffix(gseed), f"gseed={gseed}"
    return [
        Stage(
            f"gen_{gen}{sfx}",
            gen_lib.train_stage(gen, gseed),
            config_keys=kind.train_keys(gen),
            inputs=("split",),
            extra_key=extra,
        ),
        Stage(
            f"sample_{gen}{sfx}",
            gen_lib.sample_stage(gen, gseed, sfx),
            config_keys=kind.sample_keys(gen),
            inputs=(f"gen_{gen}{sfx}",),
            extra_key=extra,
        ),
        Stage(
            f"synth_{gen}{sfx}",
            gen_lib.quality_stage(gen, feature_arm, sfx),
            config_keys=QUALITY_KEYS,
            inputs=("split", f"sample_{gen}{sfx}", feature_arm),
            extra_key=extra,
        ),
    ]


def foundation_stages(config: ml_collections.ConfigDict) -> list[Stage]:
    """Split, original-arm classifiers, and every enabled generator's stages per generator
    seed."""
    seeds = classifier_seeds(config)
    stages = [split_stage()]
    group = ArmGroup()  # all seeds of the original arm train in one call
    stages += [classifier_stage("original", s, original_arm, group=group) for s in seeds]
    feature_arm = f"arm_original_s{seeds[0]}"
    for g in enabled_generators(config):
        for k in generator_seeds(config):
            stages += generator_stages(g, feature_arm, k)
    return stages


def build_stages(config: ml_collections.ConfigDict) -> list[Stage]:
    from jaxsynth.study import report as report_lib
    from jaxsynth.study.families import CONTROL_KINDS, family_stage

    seeds = classifier_seeds(config)
    gens = enabled_generators(config)
    gseeds = generator_seeds(config)
    bad = [k for k in config.study.controls if k not in CONTROL_KINDS]
    if bad:
        raise UserError(f"study.controls: unknown {bad} (choose from {', '.join(CONTROL_KINDS)})")
    stages = foundation_stages(config)
    feature_arm = f"arm_original_s{seeds[0]}"
    for g in gens:
        for k in gseeds:
            stages.append(
                family_stage(
                    g,
                    k,
                    seeds,
                    inputs=("split", f"synth_{g}{gsuffix(k)}", feature_arm),
                    keys=CLASSIFIER_KEYS + DATA_KEYS + ("classifier.seeds",),
                )
            )
    spaces = []
    if config.eval.extractors:  # more feature spaces: stages read only by the report
        from jaxsynth.study import feature_spaces as fs

        ssl = fs.wants_ssl(config)
        stages += [fs.encoder_stage()] if ssl else []
        for g in gens:
            for k in gseeds:
                stages.append(fs.spaces_stage(g, k, feature_arm, ssl))
                spaces.append(stages[-1].name)
    arm_names = [st.name for st in stages if st.name.startswith(("arm_", "arms_"))]
    per_gen = [
        f"{kind}_{g}{gsuffix(k)}"
        for g in gens
        for k in gseeds
        for kind in ("gen", "sample", "synth")
    ]
    stages.append(
        Stage(
            "report",
            report_lib.report_stage(),
            config_keys=(ALL_KEYS,),  # results.json records the whole config
            outputs=report_lib.REPORT_OUTPUTS,
            inputs=("split", *per_gen, *arm_names, *spaces),
        )
    )
    return stages


def run_stages(
    stages: list[Stage], config: ml_collections.ConfigDict, workdir: Path, verify: bool = False
) -> dict:
    from jaxsynth.version import write_environment

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_environment(workdir)
    return StageRunner(workdir, config, verify=verify).run(stages)


def run_study(config: ml_collections.ConfigDict, workdir: str | Path, verify: bool = False) -> dict:
    if config.study.cv_folds:  # K-fold cross-validation: this study once per fold, pooled
        from jaxsynth.study.folds import run_cv

        return run_cv(config, workdir, build_stages, verify)
    workdir = Path(workdir)
    results = run_stages(build_stages(config), config, workdir, verify)
    print(results["report"].get("console_table", ""), flush=True)
    print(f"report: {workdir / 'report.md'}", file=sys.stderr)
    return results
