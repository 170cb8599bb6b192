"""Run a PyTorch twin script in its own interpreter and read its JSON result.

The twins (bench/torch_*.py) import only torch and numpy, so they run in a separate venv; each
takes one JSON argument (the shapes and settings to time) and prints one JSON line last. No jax
import here: the benches call this before or after their own jax side, whose XLA flags must be
set first.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def run_twin(python: str, script: Path, spec: dict) -> dict:
    """The twin's result dict, or {"error": <its last stderr line>} when it failed."""
    proc = subprocess.run(
        [python, str(script), json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])
