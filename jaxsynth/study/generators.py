"""Generator stages of the study: train on the training split, sample, filter, score.

Each generator is configured by `gen.<name>` in the study config: a whole model config (e.g.
`configs/dcgan.py:study32`) nested in the study, so any of its keys is overridable by its full
dotted name (`--config.gen.dcgan.optim.g_lr=1e-4`). The keys the study sets for every generator
alike (`STUDY_OWNED`: seed, image size, data source and split) are removed from the nested copy
by `study_generator` and filled in from the study by `generator_config`, so every model sees the
same split; the training images are handed to the engine directly from the study split
(training split only, leak-checked), never re-drawn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import ml_collections
import numpy as np

from jaxsynth.data.split import StudySplit, assert_no_leakage
from jaxsynth.errors import UserError
from jaxsynth.study.common import gsuffix, study_split

SYNTHETIC_FILE = "synthetic.npz"


def enabled_generators(config: ml_collections.ConfigDict) -> list[str]:
    gens = list(config.generators)
    for g in gens:
        if g not in config.gen and g not in ADAPTERS:
            raise UserError(f"generators: '{g}' has no settings under gen.{g}")
    if config.sd.model_path and "sd" not in gens:
        gens.append("sd")
    for g in gens:
        if isinstance(ADAPTERS.get(g), FinetunedSD) and not config.sd.model_path:
            raise UserError(
                f"generators: '{g}' fine-tunes Stable Diffusion: set sd.model_path to a local "
                "SD folder (its base model, also sampled as the `sd` arm)"
            )
    return gens


# Top-level keys and `data.*` keys of a model config that the study sets for all generators.
STUDY_OWNED = ("seed", "image_size", "checkpoint_every")
STUDY_OWNED_DATA = ("source", "classes", "split", "phantom")


def study_generator(model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`model_config` as a study's `gen.<name>`: a copy without the keys the study owns."""
    d = model_config.to_dict()
    for key in STUDY_OWNED:
        d.pop(key, None)
    for key in STUDY_OWNED_DATA:
        d.get("data", {}).pop(key, None)
    return ml_collections.ConfigDict(d)


def generator_config(
    study: ml_collections.ConfigDict, name: str, gseed: int = 0
) -> ml_collections.ConfigDict:
    """The model config for generator `name`: `gen.<name>` plus the study's data; its seed is
    `study.seed + gseed` (gseed: one of `study.generator_seeds`)."""
    cfg = ml_collections.ConfigDict(study.gen[name].to_dict())
    cfg.seed = study.seed + gseed
    cfg.image_size = study.image_size
    cfg.checkpoint_every = min(study.checkpoint_every, max(1, cfg.num_steps))
    data = ml_collections.ConfigDict(study.data.to_dict())
    for key, value in cfg.data.items():  # the model's own data keys (train_classes, augment)
        data[key] = value
    cfg.data = data
    return cfg


def _train_data(cfg, split: StudySplit, what: str):
    from jaxsynth.train.loop import TrainData

    labels = [split.label_of(c) for c in cfg.data.train_classes]
    train = split.train.of_classes(labels)
    if len(train) == 0:
        raise UserError(f"gen: no training images of classes {cfg.data.train_classes}")
    assert_no_leakage(split, train.images, what)
    minority = split.label_of(cfg.data.minority_class)
    return TrainData(
        arrays=train.arrays(),
        real_images=split.train.of_classes([minority]).images,
        class_names=tuple(split.class_names),
    )


class GeneratorAdapter(Protocol):
    """How the study trains and samples one kind of generator: the config keys each stage reads
    (they make its cache key), the training stage's work and the sampling stage's work. A new
    kind of generator is one adapter in `ADAPTERS`; the study's stages never ask which it is."""

    def train_keys(self, name: str) -> tuple[str, ...]: ...

    def sample_keys(self, name: str) -> tuple[str, ...]: ...

    def train(self, ctx, name: str, gseed: int) -> dict: ...

    def sample(self, ctx, name: str, gseed: int, train_dir: Path) -> np.ndarray: ...


class EngineGenerator:
    """A model config under `gen.<name>` trained by the engine on the training split only
    (GANs, DDPM, StyleGAN2, ...), sampled from its EMA weights."""

    def train_keys(self, name: str) -> tuple[str, ...]:
        return ("seed", "image_size", "data", "checkpoint_every", f"gen.{name}")

    def sample_keys(self, name: str) -> tuple[str, ...]:
        return ("seed", "synthetic.num", "data.minority_class")

    def config(self, ctx, name: str, gseed: int) -> ml_collections.ConfigDict:
        """The model config the engine trains (`generator_config`)."""
        return generator_config(ctx.config, name, gseed)

    def task(self, ctx, cfg, data, split: StudySplit):
        """The Task to train, or None: the engine builds `cfg.task` itself."""
        return None

    def finish(self, ctx, cfg, task, result, split: StudySplit) -> dict:
        """After training: anything the sample stage needs, and extra result entries."""
        return {}

    def train(self, ctx, name: str, gseed: int) -> dict:
        from jaxsynth.train.loop import train

        cfg = self.config(ctx, name, gseed)
        split = study_split(ctx)
        data = _train_data(cfg, split, f"generator '{name}'")
        task = self.task(ctx, cfg, data, split)
        result = train(cfg, ctx.dir / "run", data, task=task)
        if result.interrupted:
            raise KeyboardInterrupt(f"generator {name} interrupted at step {result.step}")
        records = _read_metrics(ctx.dir / "run" / "metrics.jsonl")
        return {
            "steps": result.step,
            "train_images": len(data.arrays["label"]),
            "last_metrics": records[-1] if records else {},
            **self.finish(ctx, cfg, task, result, split),
        }

    def sample(self, ctx, name: str, gseed: int, train_dir: Path) -> np.ndarray:
        study = ctx.config
        return sample_trained(
            train_dir / "run", study.synthetic.num, study.seed + gseed, study.data.minority_class
        )


class PretrainedSD:
    """Stable Diffusion from a local diffusers folder (`sd.*`): nothing to train in the study,
    `sd.num` tiles sampled from the prompt."""

    def train_keys(self, name: str) -> tuple[str, ...]:
        return ("sd.model_path",)

    def sample_keys(self, name: str) -> tuple[str, ...]:
        return ("seed", "image_size", "sd")

    def train(self, ctx, name: str, gseed: int) -> dict:
        return {"model_path": ctx.config.sd.model_path, "trained": False}

    def sample(self, ctx, name: str, gseed: int, train_dir: Path) -> np.ndarray:
        from jaxsynth.sd.pipeline import sample_images

        study = ctx.config
        return sample_images(
            study.sd.model_path,
            prompt=study.sd.prompt,
            negative_prompt=study.sd.negative_prompt,
            num=study.sd.num,
            seed=study.seed + gseed,
            steps=study.sd.steps,
            guidance=study.sd.guidance,
            size=study.sd.size,
            out_size=study.image_size,
        )


SD_FT_INFO = "sd_ft.json"  # in the training stage's dir: what the sample stage loads


class FinetunedSD(EngineGenerator):
    """Stable Diffusion fine-tuned on the training split's tiles of `gen.<name>.data.train_classes`
    (the minority class: `configs/sd_finetune.py:tumour`), full or LoRA, by the fine-tuning Task
    on the engine (`jaxsynth.sd.finetune`), then sampled by the same pipeline sampler as `sd`
    with the fine-tuned U-Net (or the base U-Net with the adapters merged) at the study's
    image size, prompted with the minority class's training prompt. The base model is the study's
    `sd.model_path` (the `sd` arm's; `gen.<name>.sd_ft.model_path` is not used)."""

    def train_keys(self, name: str) -> tuple[str, ...]:
        return (*super().train_keys(name), "sd.model_path")

    def sample_keys(self, name: str) -> tuple[str, ...]:
        return ("seed", "image_size", "synthetic.num", "sd.model_path", f"gen.{name}.sampler")

    def config(self, ctx, name: str, gseed: int) -> ml_collections.ConfigDict:
        cfg = generator_config(ctx.config, name, gseed)
        if not ctx.config.sd.model_path:
            raise UserError(
                f"generator '{name}' fine-tunes Stable Diffusion: set sd.model_path to a local "
                "SD folder (the `sd` arm's base model)"
            )
        cfg.sd_ft.model_path = ctx.config.sd.model_path
        return cfg

    def task(self, ctx, cfg, data, split: StudySplit):
        from jaxsynth.sd import finetune as ft

        task = ft.make_task(cfg)
        # The latent cache holds exactly the tiles `_train_data` picked (training split only).
        task.prepare(data.arrays["image"], data.arrays["label"])
        return task

    def finish(self, ctx, cfg, task, result, split: StudySplit) -> dict:
        from jaxsynth.sd import finetune as ft

        ft.export(task, result.state, ctx.dir / "export")
        labels = [split.label_of(c) for c in cfg.data.train_classes]
        ids = split.train.of_classes(labels).ids
        minority = split.label_of(cfg.data.minority_class)
        info = {
            "mode": cfg.sd_ft.mode,
            "prompt": cfg.sd_ft.prompts[minority],
            "train_ids": list(ids),
            "cached_latents": int(task.cache["label"].shape[0]) if task.cache else 0,
        }
        (ctx.dir / SD_FT_INFO).write_text(json.dumps(info, indent=1) + "\n")
        return {k: v for k, v in info.items() if k != "train_ids"}

    def sample(self, ctx, name: str, gseed: int, train_dir: Path) -> np.ndarray:
        from jaxsynth.sd.pipeline import sample_images

        study, g = ctx.config, ctx.config.gen[name]
        info = json.loads((train_dir / SD_FT_INFO).read_text())
        export = str(train_dir / "export")
        return sample_images(
            study.sd.model_path,
            prompt=info["prompt"],
            num=study.synthetic.num,
            seed=study.seed + gseed,
            steps=int(g.sampler.steps),
            guidance=float(g.sampler.guidance),
            size=study.image_size,
            out_size=study.image_size,
            progress=False,
            unet_dir=export if info["mode"] == "full" else None,
            lora_dir=export if info["mode"] == "lora" else None,
        )


ENGINE = EngineGenerator()
ADAPTERS: dict[str, GeneratorAdapter] = {"sd": PretrainedSD(), "sd_ft": FinetunedSD()}


def adapter(name: str) -> GeneratorAdapter:
    """The adapter of generator `name`: its own (e.g. `sd`), else the engine's."""
    return ADAPTERS.get(name, ENGINE)


def train_stage(name: str, gseed: int = 0):
    """Stage fn: train generator `name` with seed `study.seed + gseed`."""
    return lambda ctx: adapter(name).train(ctx, name, gseed)


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sample_stage(name: str, gseed: int = 0, suffix: str = ""):
    """Stage fn: sample generator `name` (trained by stage `gen_<name><suffix>`) with seed
    `study.seed + gseed`; the tiles and a grid PNG."""

    def fn(ctx):
        from jaxsynth.train.visuals import make_grid, save_png

        images = adapter(name).sample(ctx, name, gseed, ctx.input_dir(f"gen_{name}{suffix}"))
        np.savez_compressed(ctx.dir / SYNTHETIC_FILE, images=images)
        save_png(make_grid(images[:64]), ctx.dir / "grid.png")
        return {"num": len(images), "grid": "grid.png"}

    return fn


def sample_trained(run_dir: Path, num: int, seed: int, label: str) -> np.ndarray:
    """`num` uint8 images of class `label` from a trained generator's EMA params."""
    from jaxsynth.train.sampling import sample_from_workdir

    images, _ = sample_from_workdir(run_dir, num=num, seed=seed, label=label)
    return images


QUALITY_KEYS = (
    "seed",
    "image_size",
    "data",
    "classifier.model",
    "synthetic.memorization_filter",
    "eval.inception_weights",
    "eval.tsne",
)


def quality_stage(name: str, feature_arm: str, suffix: str = ""):
    """Memorisation filter + image metrics of the synthetic set (stage `sample_<name><suffix>`)
    vs real tumour images, in the feature space of the classifier of stage `feature_arm`."""

    def fn(ctx):
        from jaxsynth.eval import fid as fid_lib
        from jaxsynth.eval import image_metrics, kid, memorization
        from jaxsynth.eval.features import DomainExtractor, InceptionExtractor, PixelExtractor

        study = ctx.config
        split = study_split(ctx)
        minority = split.label_of(study.data.minority_class)
        with np.load(ctx.input_dir(f"sample_{name}{suffix}") / SYNTHETIC_FILE) as z:
            fake = z["images"]
        assert_no_leakage(split, fake, f"synthetic set of '{name}'")
        real_train = split.train.of_classes([minority]).images
        heldout = np.concatenate(
            [split.val.of_classes([minority]).images, split.test.of_classes([minority]).images]
        )
        domain = DomainExtractor(
            domain_feature_fn(ctx.input_dir(feature_arm), study.classifier, study.image_size),
            name=f"{study.classifier.model}_original",
        )
        f_fake, f_held = domain(fake), domain(heldout)
        inc = (
            InceptionExtractor(study.eval.inception_weights)
            if study.eval.inception_weights
            else None
        )
        # Memorisation needs a feature space that did not learn the training images: the
        # domain classifier did (its features pull anything tumour-like towards them), so the
        # check uses Inception features when weights are given, else downsampled pixels; full
        # pixels are always checked too.
        mem_extract = inc or PixelExtractor(16)
        report = memorization.memorization_report(
            mem_extract(fake),
            mem_extract(real_train),
            mem_extract(heldout),
            fake_pixels=fake,
            train_pixels=real_train,
            heldout_pixels=heldout,
        )
        memorization.closest_pairs_grid(fake, real_train, report, ctx.dir / "closest_pairs.png")
        keep = (
            memorization.filter_memorized(report)
            if study.synthetic.memorization_filter
            else np.arange(len(fake))
        )
        np.savez_compressed(ctx.dir / "filtered.npz", images=fake[keep])
        ssim = image_metrics.ssim_to_set(fake, real_train)
        result = {
            "memorization_features": mem_extract.id,
            "generated": len(fake),
            "kept": int(len(keep)),
            "flagged_fraction": report["flagged_fraction"],
            "ssim_mean": ssim["mean"],
            "ssim_max_mean": ssim["max"],
            "domain_fid": fid_lib.fid_from_features(f_held, f_fake),
            "domain_kid": kid.kid(f_held, f_fake, subset_size=100, num_subsets=50)["mean"],
            "fid_features": f"domain ({study.classifier.model} trained on the original arm)",
        }
        result["fid"] = result["domain_fid"]
        if inc is not None:
            fi_fake, fi_held = inc(fake), inc(heldout)
            result["fid"] = fid_lib.fid_from_features(fi_held, fi_fake)
            result["inception_kid"] = kid.kid(fi_held, fi_fake, subset_size=100)["mean"]
            result["fid_features"] = "inception (pytorch-fid weights)"
        if study.eval.tsne:
            from jaxsynth.eval.classification import tsne_plot

            tsne_plot(
                f_held,
                f_fake,
                ctx.dir / "tsne.png",
                seed=study.seed,
                title=f"t-SNE, domain features: held-out real vs {name}",
            )
        return result

    return fn


def load_filtered(stage_dir: Path) -> np.ndarray:
    with np.load(Path(stage_dir) / "filtered.npz") as z:
        return z["images"]


def filtered_synthetic(ctx, gen: str, gseed: int) -> np.ndarray:
    """The memorisation-filtered synthetic tiles of `gen` trained with generator seed `gseed`
    (an input of the calling stage)."""
    return ctx.load(f"synth_{gen}{gsuffix(gseed)}", load_filtered)


def save_params(path: Path, params) -> None:
    from flax import serialization

    Path(path).write_bytes(serialization.msgpack_serialize(params))


def load_params(path: Path):
    from flax import serialization

    return serialization.msgpack_restore(Path(path).read_bytes())


def domain_feature_fn(arm_dir: Path, classifier_cfg, image_size: int):
    """Penultimate features of the original-arm classifier (images in [-1, 1])."""
    from jaxsynth.models.classifier import build_from_config as build_classifier
    from jaxsynth.tasks.classify import as_variables

    variables = as_variables(load_params(Path(arm_dir) / "classifier.msgpack"))
    model = build_classifier(classifier_cfg, image_size)
    return lambda x: model.apply(variables, x, method=model.features)
