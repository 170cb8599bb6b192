"""The import graph of `jaxsynth/` holds its layers: no module imports a higher layer (at module
level or inside a function) and there are no import cycles. Layers, lowest first (docs in
README.md, "Code layout"):

1 base (config, errors, xla_flags, version, images, validate, workdir_lock) · 2 models,
diffusion · 3 data · 4 eval · 5 train · 6 tasks · 7 study, sd, reader_study · 8 commands, cli.

Why a test: an upward import (the engine importing a concrete task, a metric importing the
trainer) is how a codebase stops being changeable one piece at a time; it is cheap to catch here
and expensive to undo later.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxsynth"
LAYERS = {
    "config": 1,
    "errors": 1,
    "xla_flags": 1,
    "version": 1,
    "images": 1,
    "validate": 1,
    "workdir_lock": 1,
    "__init__": 1,
    "models": 2,
    "diffusion": 2,
    "data": 3,
    "eval": 4,
    "train": 5,
    "tasks": 6,
    "study": 7,
    "sd": 7,
    "reader_study": 7,
    "commands": 8,
    "cli": 8,
}


def module_name(path: Path) -> str:
    parts = ("jaxsynth",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "jaxsynth" or len(parts) == 1:
        return 1 if parts == ["jaxsynth"] else None
    if parts[1] == "configs":  # data, loaded by name at run time; may import any layer
        return None
    return LAYERS[parts[1]]


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                # `from pkg import module` names a module; `from module import name` does not
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("jaxsynth"):
                    graph[mod].add(t)
    return graph


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
        for m, targets in import_graph().items()
        for t in targets
        if layer(m) is not None and layer(t) is not None and layer(t) > layer(m)
    ]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = import_graph()
    # packages import their own modules through __init__; a package node is not a cycle member
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
