"""The `jaxsynth` command line: a thin dispatcher over `jaxsynth.commands.*`.

Each command module exposes `register(subparsers)`, which adds its sub-parser and sets
`func=<callable(args) -> int>`. Arguments of the form `--config.a.b=value` are collected into
`args.config_overrides` for commands that take a config. A `UserError` anywhere is printed as one
line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxsynth.errors import UserError

# Command modules, in the order they appear in `jaxsynth --help`.
COMMAND_MODULES = [
    "jaxsynth.commands.run",
    "jaxsynth.commands.data",
    "jaxsynth.commands.train",
    "jaxsynth.commands.sample",
    "jaxsynth.commands.eval",
    "jaxsynth.commands.sd",
    "jaxsynth.commands.reader_study",
    "jaxsynth.commands.compare",
    "jaxsynth.commands.configs",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxsynth",
        description="Synthetic histopathology images for rare tumour classes (JAX/Flax).",
    )
    parser.add_argument(
        "--version", action="store_true", help="print the package, library and device versions"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    parser = build_parser()
    args = parser.parse_args(rest)
    if args.version:
        from jaxsynth.version import version_text

        print(version_text())
        return 0
    if args.command is None:
        parser.error("the following arguments are required: COMMAND")
    args.config_overrides = overrides
    if overrides and not getattr(args, "takes_config", False):
        parser.error(f"'{args.command}' takes no --config.* overrides")
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"jaxsynth: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a full disk / denied permission: one line, not a buried traceback
        from jaxsynth.validate import os_error_line

        line = os_error_line(e, getattr(args, "workdir", None))
        if line is None:
            raise
        print(f"jaxsynth: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jaxsynth: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
