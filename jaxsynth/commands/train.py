"""`jaxsynth train --config configs/<x>.py[:variant] --workdir W [--config.k=v ...]`.

Builds (or loads) the study split in W, trains ONLY on the training split's
`config.data.train_classes` (checked against the held-out val/test images), and runs the engine.
A W that already holds checkpoints resumes; `--config` may then be omitted (W/config.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ml_collections
import numpy as np

from jaxsynth.config import apply_overrides, load_config
from jaxsynth.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model (GAN, DDPM, classifier) with the one engine; resumes"
    )
    p.add_argument("--config", help="config file, e.g. configs/dcgan.py:smoke")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, logs, samples)")
    p.add_argument(
        "--restart",
        action="store_true",
        help="start over in --workdir: its checkpoints and logs are moved to restarted-<time>/",
    )
    p.set_defaults(func=run, takes_config=True)


def resolve_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """--config (+ overrides), or the config saved in a workdir being resumed."""
    overrides = getattr(args, "config_overrides", [])
    if args.config:
        return load_config(args.config, overrides)
    saved = Path(args.workdir) / "config.json"
    if not saved.is_file():
        raise UserError(f"--config is required: {args.workdir} holds no config.json to resume")
    config = ml_collections.ConfigDict(json.loads(saved.read_text()))
    apply_overrides(config, overrides)
    return config


def training_data(config: ml_collections.ConfigDict, workdir: str | Path):
    """The generator's training arrays: train split, `data.train_classes` only, leak-checked."""
    from jaxsynth.data.split import assert_no_leakage, load_or_build_split
    from jaxsynth.train.loop import TrainData

    split = load_or_build_split(config, workdir)
    wanted = tuple(config.data.get("train_classes", split.class_names))
    labels = [split.label_of(c) for c in wanted]
    train = split.train.of_classes(labels)
    if len(train) == 0:
        raise UserError(f"data.train_classes={wanted}: no training images of those classes")
    assert_no_leakage(split, train.images, f"the {config.get('task', 'model')} model")
    num_classes = int(config.get("model", {}).get("num_classes", 0) or 0)
    if num_classes and num_classes < len(split.class_names):
        raise UserError(
            f"model.num_classes={num_classes} but the split has {len(split.class_names)} classes "
            f"({', '.join(split.class_names)})"
        )
    from jaxsynth.tasks.domain import FeatureData, domain_features

    val, test = split.val.of_classes(labels), split.test.of_classes(labels)
    return TrainData(
        arrays=train.arrays(),
        real_images=train.images,
        class_names=tuple(split.class_names),
        heldout_images=np.concatenate([val.images, test.images]),
        heldout_labels=np.concatenate([val.labels, test.labels]),
        val_arrays=val.arrays(),
        domain_features=domain_features(
            FeatureData(split.train.images, split.train.labels, split.val.images, split.val.labels)
        ),
    )


def training_data_first_on_process_0(config: ml_collections.ConfigDict, workdir: str | Path):
    """`training_data`, built by process 0 before the others read it (multi-host, shared workdir).

    WHY: every process of a multi-host run calls this with the same workdir; letting them all
    build the split cache at once races on its directory. Process 0 builds (or loads) it, a
    barrier, then the others load the finished cache (or build their own on a non-shared disk).
    """
    import jax

    if jax.process_count() == 1:
        return training_data(config, workdir)
    from jax.experimental import multihost_utils

    data = training_data(config, workdir) if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("jaxsynth train: study split ready")
    return data if data is not None else training_data(config, workdir)


def run(args: argparse.Namespace) -> int:
    from jaxsynth import xla_flags

    xla_flags.apply(compile_cache=True)
    from jaxsynth.train.mesh import maybe_initialize_distributed

    maybe_initialize_distributed()  # multi-host: before anything touches a device
    import contextlib

    import jax

    from jaxsynth.train.loop import train
    from jaxsynth.train.task import build_task
    from jaxsynth.validate import check_train_config
    from jaxsynth.workdir_lock import WorkdirLock, set_aside_run

    config = resolve_config(args)
    check_train_config(config, jax.device_count())
    task = build_task(config)  # a bad model config fails before the split is built
    # one run per workdir; the other processes of a multi-host run share process 0's
    lock = WorkdirLock(args.workdir, "train")
    with lock if jax.process_index() == 0 else contextlib.nullcontext():
        if args.restart and jax.process_index() == 0:
            moved = set_aside_run(args.workdir)
            if moved:
                print(f"--restart: the previous run's files are kept in {moved}")
        data = training_data_first_on_process_0(config, args.workdir)
        if hasattr(task, "prepare_data"):  # e.g. CycleGAN packs its second, unpaired domain
            data = task.prepare_data(data)
        result = train(config, args.workdir, data, task=task)
    print(f"done: step {result.step}, workdir {Path(args.workdir).resolve()}")
    return 0
