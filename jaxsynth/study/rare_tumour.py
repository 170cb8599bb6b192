"""`jaxsynth run`: the end-to-end rare-tumour study as a list of cached stages.

split → original-arm classifiers (they also give the "domain" feature extractor) → for each
generator: train on the training split only → sample synthetic minority tiles → memorisation
filter + image metrics → classifier arms × seeds → report (results.json/csv, report.md, PNGs).

Every stage is cached by the config keys it reads (`jaxsynth.study.stages`), so a killed run
continues at the first unfinished stage, and changing, say, `gen.dcgan.num_steps` reruns only
DCGAN's stages, its arms and the report.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ml_collections
import numpy as np

from jaxsynth.data.split import load_or_build_split
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


def _split(ctx_or_config, workdir: Path):
    config = ctx_or_config.config if isinstance(ctx_or_config, StageContext) else ctx_or_config
    return load_or_build_split(config, workdir, progress=False)


def minority_label(config, split) -> int:
    return split.label_of(config.data.minority_class)


def build_stages(config: ml_collections.ConfigDict, workdir: Path) -> list[Stage]:
    from jaxsynth.study import generators as gen_lib
    from jaxsynth.study import report as report_lib

    gens = enabled_generators(config)
    seeds = list(config.classifier.seeds)
    if len(seeds) < 1:
        raise UserError("classifier.seeds: need at least one seed (3 or more for CIs)")
    stages: list[Stage] = []

    def split_stage(ctx):
        split = _split(ctx, workdir)
        return {
            "counts": {
                n: np.bincount(split.split(n).labels, minlength=2).tolist()
                for n in ("train", "val", "test")
            },
            "class_names": list(split.class_names),
            "skipped": split.manifest["skipped"]["skipped"],
        }

    stages.append(Stage("split", split_stage, config_keys=DATA_KEYS))

    def arm_stage(arm_name: str, gen: str | None, seed: int, synthetic_only: bool):
        def fn(ctx):
            split = _split(ctx, workdir)
            if gen is None:
                arm = arms_lib.original_arm(split)
            else:
                syn = gen_lib.load_filtered(ctx.input_dir(f"synth_{gen}"))
                if len(syn) == 0:
                    return {
                        "arm": arm_name,
                        "seed": seed,
                        "skipped": f"no synthetic images of '{gen}' survived the memorisation "
                        "filter",
                    }
                arm = arms_lib.augmented_arm(
                    split, gen, syn, minority_label(config, split), synthetic_only
                )
            result, params = arms_lib.train_and_score(arm, split, config.classifier, seed)
            gen_lib.save_params(ctx.dir / "classifier.msgpack", params)
            return result

        inputs = ("split",) if gen is None else ("split", f"synth_{gen}")
        return Stage(
            f"arm_{arm_name}_s{seed}",
            fn,
            config_keys=CLASSIFIER_KEYS + DATA_KEYS,
            inputs=inputs,
            extra_key=f"seed={seed}",
        )

    for s in seeds:
        stages.append(arm_stage("original", None, s, False))

    for g in gens:
        stages.append(
            Stage(
                f"gen_{g}",
                gen_lib.train_stage(g, workdir),
                config_keys=DATA_KEYS + (f"gen.{g}", "sd")
                if g == "sd"
                else DATA_KEYS + (f"gen.{g}",),
                inputs=("split",),
            )
        )
        stages.append(
            Stage(
                f"sample_{g}",
                gen_lib.sample_stage(g, workdir),
                config_keys=("synthetic.num", "sd"),
                inputs=(f"gen_{g}",),
            )
        )
        stages.append(
            Stage(
                f"synth_{g}",
                gen_lib.quality_stage(g, workdir),
                config_keys=("synthetic.memorization_filter", "eval.inception_weights") + DATA_KEYS,
                inputs=("split", f"sample_{g}", f"arm_original_s{seeds[0]}"),
            )
        )
    for g in gens:
        for s in seeds:
            stages.append(arm_stage(g, g, s, False))
        if config.classifier.synthetic_only_arms:
            for s in seeds:
                stages.append(arm_stage(f"{g}_synthetic_only", g, s, True))

    arm_stage_names = [st.name for st in stages if st.name.startswith("arm_")]
    synth_names = [f"synth_{g}" for g in gens]
    gen_names = [f"gen_{g}" for g in gens]
    stages.append(
        Stage(
            "report",
            report_lib.report_stage(workdir),
            config_keys=("eval.bootstrap", "eval.tsne"),
            inputs=("split", *gen_names, *synth_names, *arm_stage_names),
        )
    )
    return stages


def run_study(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(workdir, config)
    results = runner.run(build_stages(config, workdir))
    report = results["report"]
    print(report.get("console_table", ""), flush=True)
    print(f"report: {workdir / 'report.md'}", file=sys.stderr)
    return results
