"""`jaxsynth configs` (the named configs and their variants) and `jaxsynth configs show NAME`.

    jaxsynth configs                         # one line per named config: variants, summary
    jaxsynth configs show dcgan:study32      # that config, resolved, as a Python file to copy
    jaxsynth configs show rare_tumour --config.gen.dcgan.optim.g_lr=1e-4

`show` prints a `get_config()` that rebuilds exactly the resolved config, so a user's own
config starts as a copy of a shipped one (`jaxsynth configs show dcgan > mine.py`, then
`jaxsynth train --config mine.py ...`).
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("configs", help="list the named configs, or show one resolved")
    sub = p.add_subparsers(dest="configs_command", metavar="{show}")
    p.set_defaults(func=list_configs, takes_config=False)
    show = sub.add_parser("show", help="print one config, resolved, as a Python config file")
    show.add_argument("name", help="name[:variant] or path.py[:variant]")
    show.add_argument("--json", action="store_true", help="print JSON instead of Python")
    show.set_defaults(func=show_config, takes_config=True)


def list_configs(args: argparse.Namespace) -> int:
    from jaxsynth.config import named_configs

    for name, module in named_configs().items():
        variants = getattr(module, "VARIANTS", None)
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        print(f"{name}")
        print(f"    variants: {variants.describe() if variants else '-'}")
        print(f"    {summary}")
    return 0


def show_config(args: argparse.Namespace) -> int:
    from jaxsynth.config import config_to_dict, load_config

    config = load_config(args.name, args.config_overrides)
    d = config_to_dict(config)
    if args.json:
        print(json.dumps(d, indent=2, sort_keys=True))
        return 0
    print(f'"""{args.name}, resolved by `jaxsynth configs show` (edit and train with it)."""\n')
    print("import ml_collections\n\n")
    print("def get_config(arg=None):")
    print(f"    return ml_collections.ConfigDict({_py(d, 8)})")
    return 0


def _py(value, indent: int) -> str:
    """A Python literal for a JSON-like value (lists from tuples stay tuples)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ",\n".join(f"{pad}{k!r}: {_py(v, indent + 4)}" for k, v in value.items())
        return "{\n" + items + f",\n{' ' * (indent - 4)}}}"
    if isinstance(value, list):
        return "(" + "".join(f"{_py(v, indent)}, " for v in value).rstrip(" ") + ")"
    return repr(value)
