"""`jaxsynth run` (the rare-tumour study) and `jaxsynth sweep` (the synthetic-ratio study).

    jaxsynth run   [--config configs/rare_tumour.py[:variant]] [--workdir W] [--config.k=v ...]
    jaxsynth sweep [--config configs/ratio_sweep.py[:variant]] [--workdir W] [--config.k=v ...]

Both are staged and cached (`jaxsynth.study.stages`): rerunning with the same workdir continues
from the first unfinished stage, and the two share stages when run in the same workdir.
"""

from __future__ import annotations

import argparse

STUDIES = {
    # command: (default config, default workdir, "module:function", help)
    "run": (
        "rare_tumour",
        "runs/rare_tumour",
        "jaxsynth.study.rare_tumour:run_study",
        "the rare-tumour study end to end (split, generators, classifiers, report)",
    ),
    "sweep": (
        "ratio_sweep",
        "runs/ratio_sweep",
        "jaxsynth.study.sweep:run_sweep",
        "synthetic-ratio sweep: classifier metrics vs share of synthetic images",
    ),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, (config, workdir, entry, help_text) in STUDIES.items():
        p = subparsers.add_parser(name, help=help_text)
        p.add_argument("--config", default=config, help=f"study config (default: {config})")
        p.add_argument("--workdir", default=workdir, help="output directory (resumable)")
        p.add_argument(
            "--verify",
            action="store_true",
            help="check every cached stage's files by SHA-256, not only by size",
        )
        p.set_defaults(func=run, takes_config=True, study_entry=entry)


def run(args: argparse.Namespace) -> int:
    from jaxsynth import xla_flags

    xla_flags.apply(compile_cache=True)
    import importlib

    from jaxsynth.config import load_config
    from jaxsynth.workdir_lock import WorkdirLock

    module_name, _, fn_name = args.study_entry.partition(":")
    config = load_config(args.config, args.config_overrides)
    with WorkdirLock(args.workdir, args.command):
        study = getattr(importlib.import_module(module_name), fn_name)
        study(config, args.workdir, verify=args.verify)
    return 0
