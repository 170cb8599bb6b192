"""`jaxsynth run [--config configs/rare_tumour.py[:variant]] [--workdir W] [--config.k=v ...]`.

The main job: the end-to-end rare-tumour study (see `jaxsynth.study.rare_tumour`). Rerunning
with the same workdir continues from the first unfinished stage.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="the rare-tumour study end to end (split, generators, classifiers, report)"
    )
    p.add_argument("--config", default="rare_tumour", help="study config (default: rare_tumour)")
    p.add_argument("--workdir", default="runs/rare_tumour", help="output directory (resumable)")
    p.set_defaults(func=run, takes_config=True)


def run(args: argparse.Namespace) -> int:
    from jaxsynth import xla_flags

    xla_flags.apply()
    from jaxsynth.config import load_config
    from jaxsynth.study.rare_tumour import run_study

    config = load_config(args.config, args.config_overrides)
    run_study(config, args.workdir)
    return 0
