"""The examples and bench scripts import only names that exist.

They are run by hand (heavy), so nothing else would notice when a module they import from is
moved: every `from jaxsynth... import name` in them, at module level or inside a function, must
resolve."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("examples/*.py"), *ROOT.glob("bench/*.py")])


def _jaxsynth_imports(path: Path):
    tree = ast.parse(path.read_text())
    fallbacks = {  # `except ImportError:` bodies: deliberate fallbacks for older checkouts
        id(n)
        for t in ast.walk(tree)
        if isinstance(t, ast.Try)
        for h in t.handlers
        if isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
        for stmt in h.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in fallbacks:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxsynth"):
            for alias in node.names:
                yield node.module, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jaxsynth"):
                    yield alias.name, None, node.lineno


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_imports_resolve(path):
    missing = []
    for module, name, line in _jaxsynth_imports(path):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            if "extra" in str(e) or "No module named 'jaxsynth" not in str(e):
                continue  # an optional extra (e.g. torch-only helpers) is not this test's job
            missing.append(f"line {line}: {module} ({e})")
            continue
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"line {line}: {module}.{name}")
    assert not missing, f"{path.name}: " + "; ".join(missing)
