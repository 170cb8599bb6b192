"""One generator seed's arm family: the generator arm, its variants and its controls.

For generator `g` trained with generator seed `k`, stage `arms_<g>_g<k>` builds

* `<g>`: real training split + the generator's (memorisation-filtered) synthetic tumour tiles;
* `<g>_synthetic_only` (if `classifier.synthetic_only_arms`);
* `<g>_selective` (if `study.selective`): only the synthetic tiles the HistoGAN filter keeps
  (`jaxsynth.study.selective`; thresholds from the validation split);
* `<g>_classical` / `<g>_oversample` (from `study.controls`): the same number of added tumour
  tiles as `<g>`, made from real training tiles without a generator
  (`jaxsynth.study.controls`); their random draws are seeded by (study seed, k, g), so the
  generator-seed level of a control is a fresh augmentation draw;

and trains every arm × classifier seed through one `arms.train_and_score_many` call (a batched
trainer can replace it). Each run records its generator seed for the hierarchical bootstrap.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from jaxsynth.study import arms as arms_lib
from jaxsynth.study.stages import Stage, StageContext

CONTROL_KINDS = ("classical", "oversample")
FAMILY_KEYS = (
    "classifier.synthetic_only_arms",
    "study.controls",
    "study.classical",
    "study.selective",
    "study.selective_confidence_quantile",
    "study.selective_distance_quantile",
)


def _selective_arm(split, ctx: StageContext, gen: str, syn: np.ndarray, minority: int):
    from jaxsynth.study.common import original_dir
    from jaxsynth.study.generators import domain_feature_fn, load_params
    from jaxsynth.study.selective import select_synthetic
    from jaxsynth.tasks.classify import predict_proba, to_unit_range

    cfg = ctx.config
    arm_dir = original_dir(ctx)
    model = arms_lib.build_classifier(cfg.classifier, cfg.image_size)
    weights = load_params(Path(arm_dir) / "classifier.msgpack")
    feats = domain_feature_fn(arm_dir, cfg.classifier, cfg.image_size)
    info = select_synthetic(
        syn,
        split.val.of_classes([minority]).images,
        split.train.of_classes([minority]).images,
        lambda x: predict_proba(weights, x, model=model),
        lambda x: np.asarray(feats(to_unit_range(x))),
        split.manifest,
        cfg.study.selective_confidence_quantile,
        cfg.study.selective_distance_quantile,
    )
    keep = info.pop("keep")
    if len(keep) == 0:
        return f"the selective filter kept none of {len(syn)} '{gen}' tiles", info
    arm = arms_lib.augmented_arm(split, gen, syn[keep], minority, synthetic_only=False)
    arm.name = f"{gen}_selective"
    return arm, info


def family_arms(split, ctx: StageContext, gen: str, gseed: int):
    """([ArmData], {arm: why skipped}, selective-filter info) for one generator seed."""
    from jaxsynth.study import controls
    from jaxsynth.study.common import minority_label
    from jaxsynth.study.generators import filtered_synthetic

    cfg = ctx.config
    minority = minority_label(cfg, split)
    syn = filtered_synthetic(ctx, gen, gseed)
    names = [gen, f"{gen}_synthetic_only"] if cfg.classifier.synthetic_only_arms else [gen]
    if cfg.study.selective:
        names.append(f"{gen}_selective")
    names += [f"{gen}_{c}" for c in cfg.study.controls]
    if len(syn) == 0:
        why = f"no synthetic images of '{gen}' (generator seed {gseed}) survived the filter"
        return [], {n: why for n in names}, {}
    built = [arms_lib.augmented_arm(split, gen, syn, minority, synthetic_only=False)]
    if cfg.classifier.synthetic_only_arms:
        built.append(arms_lib.augmented_arm(split, gen, syn, minority, synthetic_only=True))
    skipped, info = {}, {}
    if cfg.study.selective:
        arm, info = _selective_arm(split, ctx, gen, syn, minority)
        if isinstance(arm, str):
            skipped[f"{gen}_selective"] = arm
        else:
            built.append(arm)
    rng = np.random.default_rng([cfg.seed, gseed, zlib.crc32(gen.encode())])
    for kind in cfg.study.controls:
        if kind == "classical":
            built.append(
                controls.classical_arm(split, gen, len(syn), minority, rng, cfg.study.classical)
            )
        elif kind == "oversample":
            built.append(controls.oversample_arm(split, gen, len(syn), minority, rng))
    return built, skipped, info


def family_stage(gen: str, gseed: int, seeds: list[int], inputs, keys) -> Stage:
    """Stage `arms_<gen>_g<gseed>`: every arm of the family × every classifier seed."""

    def fn(ctx: StageContext) -> dict:
        from jaxsynth.study.common import study_split
        from jaxsynth.study.generators import save_params

        split = study_split(ctx)
        built, skipped, info = family_arms(split, ctx, gen, gseed)
        runs = []
        pairs = arms_lib.train_and_score_many(built, split, ctx.config.classifier, seeds)
        for (result, params), (arm, seed) in zip(
            pairs, [(a, s) for a in built for s in seeds], strict=True
        ):
            save_params(ctx.dir / f"{arm.name}_s{seed}.msgpack", params)
            runs.append({**result, "arm": arm.name, "generator": gen, "generator_seed": gseed})
        return {
            "generator": gen,
            "generator_seed": gseed,
            "runs": runs,
            "skipped": skipped,
            "selective": info,
        }

    return Stage(
        f"arms_{gen}_g{gseed}",
        fn,
        config_keys=keys + FAMILY_KEYS,
        inputs=inputs,
        extra_key=f"gseed={gseed}",
    )
