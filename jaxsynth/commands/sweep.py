"""`jaxsynth sweep [--config configs/ratio_sweep.py[:variant]] [--workdir W] [--config.k=v]`.

The synthetic-ratio study (see `jaxsynth.study.sweep`); resumable like `jaxsynth run`, and it
shares cached stages with a study run in the same workdir.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="synthetic-ratio sweep: classifier metrics vs share of synthetic images"
    )
    p.add_argument("--config", default="ratio_sweep", help="sweep config (default: ratio_sweep)")
    p.add_argument("--workdir", default="runs/ratio_sweep", help="output directory (resumable)")
    p.set_defaults(func=run, takes_config=True)


def run(args: argparse.Namespace) -> int:
    from jaxsynth import xla_flags

    xla_flags.apply()
    from jaxsynth.config import load_config
    from jaxsynth.study.sweep import run_sweep

    config = load_config(args.config, args.config_overrides)
    run_sweep(config, args.workdir)
    return 0
