"""The study's feature spaces (`eval.extractors`): build them, train the SSL encoder once per
dataset, and tabulate FD per generator per space.

Why here (study layer): the self-supervised encoder is trained by the engine (`train/`) on the
study's real TRAINING split, which only the study knows; `eval/` stays free of training.

In the study (`jaxsynth run --config.eval.extractors="('ssl','pixels')"`): stage `encoder_ssl`
trains the encoder on the training split once (when `ssl` is listed), and a stage
`spaces_<gen>_g<k>` per generator seed measures FD / KID / PRDC of the synthetic set against the
held-out real minority tiles in the domain CNN's space and in every listed space. They are
stages of their own, read only by the report, so adding a feature space reruns them and the
report, never a generator or a classifier. With `eval.extractors = ()` (the default) the study
has none of these stages.

`eval.extractors` entries: `ssl` (the encoder trained here, cached under
`<cache_root>/ssl_<key>` where key = hash(training tiles, encoder config)), `ssl:DIR`,
`hf-vit:DIR`, `timm-vit:DIR`, `inception:PATH`, `domain` (needs the caller's DomainExtractor),
`pixels`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from jaxsynth.config import config_hash, config_to_dict, load_config
from jaxsynth.eval import extractors as ex
from jaxsynth.eval.spaces import metrics_in_spaces

SSL_CONFIG = "ssl_encoder.py"


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = np.asarray(v)
    return out


def ssl_config_for(train_images: np.ndarray, config_arg: str = "", overrides=()):
    """The encoder config (`configs/ssl_encoder.py[:arg]` + overrides) at the tiles' size."""
    config = load_config(f"{SSL_CONFIG}:{config_arg}" if config_arg else SSL_CONFIG, overrides)
    config.image_size = int(train_images.shape[1])
    return config


def ssl_key(train_images: np.ndarray, config) -> str:
    """Cache key of an encoder: the training tiles' bytes and the full encoder config."""
    h = hashlib.sha256(np.ascontiguousarray(train_images).tobytes())
    h.update(config_hash(config_to_dict(config)).encode())
    return h.hexdigest()[:16]


def ssl_encoder_for(
    train_images: np.ndarray,
    cache_root: str | Path,
    config_arg: str = "",
    overrides: tuple[str, ...] = (),
    stream=None,
) -> Path:
    """The folder of a SimCLR encoder trained on `train_images` (uint8 NHWC, real TRAINING tiles
    only), trained through the engine on first use and reused after (keyed on the tiles' bytes
    and the encoder config). Returns a folder `SslExtractor` reads."""
    from jaxsynth.train.loop import TrainData, train

    config = ssl_config_for(train_images, config_arg, overrides)
    folder = Path(cache_root) / f"ssl_{ssl_key(train_images, config)}"
    if (folder / "encoder.npz").is_file():
        return folder
    out = stream or sys.stdout
    arrays = {"image": train_images, "label": np.zeros(len(train_images), np.int32)}
    result = train(config, folder / "run", TrainData(arrays=arrays), stream=out)
    params = result.state["encoder"].ema_params
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "encoder.tmp.npz"
    np.savez(tmp, **_flatten(jax_to_numpy(params)))
    meta = {
        "widths": list(config.ssl.widths),
        "proj_dim": int(config.ssl.proj_dim),
        "image_size": int(config.image_size),
        "num_train_tiles": int(len(train_images)),
        "steps": int(result.step),
        "config": config_to_dict(config),
    }
    (folder / "encoder.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    tmp.rename(folder / "encoder.npz")
    return folder


def jax_to_numpy(tree):
    import jax

    return jax.tree.map(np.asarray, jax.device_get(tree))


def study_extractors(
    names: list[str] | tuple[str, ...],
    *,
    train_images: np.ndarray | None = None,
    cache_root: str | Path,
    domain=None,
    pool: str = "cls",
    batch_size: int = 32,
    ssl_config: str = "",
    stream=None,
) -> dict:
    """{report name: extractor} for the study's `eval.extractors` list. A bare `ssl` trains (or
    reuses) the encoder on `train_images`."""
    specs = []
    for text in names:
        if str(text).strip() == "ssl":
            if train_images is None:
                raise ValueError("eval.extractors 'ssl' needs the real training tiles")
            folder = ssl_encoder_for(train_images, cache_root, ssl_config, stream=stream)
            specs.append(ex.ExtractorSpec("ssl", str(folder), "ssl"))
        else:
            specs.append(ex.parse_extractor(text))
    specs = ex.name_specs(specs)
    return {
        s.name: ex.build_extractor(
            s, cache_dir=str(cache_root), batch_size=batch_size, pool=pool, domain=domain
        )
        for s in specs
    }


def fd_table(real: np.ndarray, fakes: dict[str, np.ndarray], extractors: dict, cache_dir=None):
    """{generator: {fd_<space>: value}} plus, per space, the generators ranked best first."""
    rows = {
        g: {
            k: v
            for k, v in metrics_in_spaces(
                real, imgs, extractors, metrics={"fd"}, cache_dir=cache_dir
            ).items()
            if k.startswith("fd_")
        }
        for g, imgs in fakes.items()
    }
    ranks = {f"fd_{n}": sorted(rows, key=lambda g, n=n: rows[g][f"fd_{n}"]) for n in extractors}
    return {"rows": rows, "ranking": ranks}


def phantom_tiles(
    seed: int, n: int, size: int, fibres: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """n phantom tiles (labels alternate normal/tumour) from source seed `seed`."""
    from jaxsynth.data.phantom import render_tile, tile_seed

    imgs = np.stack(
        [render_tile(tile_seed(seed, i), i % 2, size, fibres=fibres)[0] for i in range(n)]
    )
    return imgs, np.arange(n, dtype=np.int32) % 2


def missing_component_check(
    *,
    n_train: int = 512,
    n_eval: int = 200,
    image_size: int = 32,
    ssl_config: str = "phantom",
    cache_root: str | Path,
    seed: int = 0,
    stream=None,
) -> dict:
    """Which feature spaces see a missing tissue component (the phantom's stroma fibres)?

    Real TRAINING tiles (source seed `seed`) train the SSL encoder and the domain CNN; a real
    reference set (seed+1) is compared with: other real tiles (seed+2), the same kind of tiles
    rendered without fibres (seed+3), and uniform noise. Returns {space: {"real", "no_fibres",
    "noise": FD}} -- a space that sees the fibres puts "no_fibres" far above "real".
    """
    from jaxsynth.eval.fid import fid_from_features
    from jaxsynth.tasks.domain import FeatureData, domain_extractor

    train_x, train_y = phantom_tiles(seed, n_train, image_size)
    val_x, val_y = phantom_tiles(seed + 4, 64, image_size)
    ref, _ = phantom_tiles(seed + 1, n_eval, image_size)
    sets = {
        "real": phantom_tiles(seed + 2, n_eval, image_size)[0],
        "no_fibres": phantom_tiles(seed + 3, n_eval, image_size, fibres=False)[0],
        "noise": np.random.default_rng(seed).integers(
            0, 256, (n_eval, image_size, image_size, 3), dtype=np.uint8
        ),
    }
    domain = domain_extractor(FeatureData(train_x, train_y, val_x, val_y), seed=seed)
    spaces = study_extractors(
        ["ssl", "domain", "pixels"],
        train_images=train_x,
        cache_root=cache_root,
        domain=domain,
        ssl_config=ssl_config,
        stream=stream,
    )
    out = {}
    for name, ext in spaces.items():
        f_ref = ext(ref)
        out[name] = {k: float(fid_from_features(f_ref, ext(v))) for k, v in sets.items()}
    return out


# ---- the study's stages ---------------------------------------------------------------------

SPACES_KEYS = ("seed", "image_size", "data", "classifier.model", "eval.extractors")
ENCODER_KEYS = ("eval.ssl_config",)
ENCODER_STAGE = "encoder_ssl"


def wants_ssl(config) -> bool:
    return any(str(e).strip() == "ssl" for e in config.eval.extractors)


def encoder_stage():
    """Stage `encoder_ssl`: the SimCLR encoder trained on the real training split (all classes,
    never validation or test), kept in the stage's directory."""
    from jaxsynth.study.common import study_split
    from jaxsynth.study.stages import Stage

    def fn(ctx):
        split = study_split(ctx)
        folder = ssl_encoder_for(split.train.images, ctx.dir, ctx.config.eval.ssl_config)
        meta = json.loads((folder / "encoder.json").read_text())
        return {"folder": folder.name, "steps": meta["steps"], "train_tiles": len(split.train)}

    return Stage(ENCODER_STAGE, fn, config_keys=ENCODER_KEYS, inputs=("split",))


def spaces_stage(gen: str, gseed: int, feature_arm: str, ssl: bool):
    """Stage `spaces_<gen>_g<gseed>`: FD / KID / PRDC of the generator's synthetic set (before the
    memorisation filter, as the quality stage's FID) vs the held-out real minority tiles, in the
    domain space and in each `eval.extractors` space."""
    from jaxsynth.study.common import gsuffix, study_split
    from jaxsynth.study.stages import Stage

    sfx = gsuffix(gseed)
    sample = f"sample_{gen}{sfx}"

    def fn(ctx):
        from jaxsynth.eval.features import DomainExtractor
        from jaxsynth.study.generators import SYNTHETIC_FILE, domain_feature_fn

        study = ctx.config
        split = study_split(ctx)
        minority = split.label_of(study.data.minority_class)
        heldout = np.concatenate(
            [split.val.of_classes([minority]).images, split.test.of_classes([minority]).images]
        )
        with np.load(ctx.input_dir(sample) / SYNTHETIC_FILE) as z:
            fake = z["images"]
        domain = DomainExtractor(
            domain_feature_fn(ctx.input_dir(feature_arm), study.classifier, study.image_size),
            name=f"{study.classifier.model}_original",
        )
        names = []
        for text in study.eval.extractors:
            text = str(text).strip()
            if text == "ssl":
                folder = ctx.input_dir(ENCODER_STAGE) / ctx.input(ENCODER_STAGE)["folder"]
                text = f"ssl:{folder}"
            names.append(text)
        extractors = {"domain": domain}
        extractors.update(study_extractors(names, cache_root=ctx.dir))
        out = metrics_in_spaces(
            heldout, fake, extractors, kid_subset_size=100, kid_subsets=50, seed=study.seed
        )
        return {"generator": gen, "generator_seed": gseed, "real": len(heldout), **out}

    inputs = ("split", sample, feature_arm) + ((ENCODER_STAGE,) if ssl else ())
    return Stage(
        f"spaces_{gen}{sfx}", fn, config_keys=SPACES_KEYS, inputs=inputs, extra_key=f"g={gseed}"
    )


def spaces_summary(results: dict[str, dict]) -> dict:
    """From the `spaces_*` stage results: per space, each generator's FD (mean over its generator
    seeds, with the per-seed values) and the generators ranked by it, best first."""
    per: dict[str, dict[str, list[float]]] = {}
    for res in results.values():
        for key, value in res.items():
            if key.startswith("fd_") and value is not None:
                per.setdefault(key[3:], {}).setdefault(res["generator"], []).append(float(value))
    table = {
        space: {g: {"fd_mean": float(np.mean(v)), "fd_per_seed": v} for g, v in gens.items()}
        for space, gens in per.items()
    }
    ranking = {space: sorted(t, key=lambda g, t=t: t[g]["fd_mean"]) for space, t in table.items()}
    return {"fd": table, "ranking": ranking}


def spaces_markdown(summary: dict) -> str:
    """The report's table: FD of each generator's synthetic tiles in each feature space."""
    spaces = list(summary["fd"])
    gens = sorted({g for t in summary["fd"].values() for g in t})
    lines = [
        "## Feature spaces",
        "",
        "Fréchet distance of each generator's synthetic tiles to the held-out real tumour tiles "
        "in each feature space (mean over generator seeds; lower is closer), and the generators "
        "ranked in each space. `domain`: the original arm's classifier (sees only what separates "
        "the classes); `ssl`: the stack's self-supervised encoder trained on the real training "
        "split; `pixels`: 16×16 pixels.",
        "",
        "| generator | " + " | ".join(f"FD {s}" for s in spaces) + " |",
        "|---|" + "---:|" * len(spaces),
    ]
    for g in gens:
        cells = [
            f"{summary['fd'][s][g]['fd_mean']:.4g}" if g in summary["fd"][s] else "–"
            for s in spaces
        ]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines += ["", *[f"- ranking in `{s}`: {' < '.join(summary['ranking'][s])}" for s in spaces]]
    return "\n".join(lines) + "\n"
