"""bench/device_check.sh: the prepared GPU check runs its five benchmarks (dry run), lints clean,
and its report keeps every number and says which benchmark failed or did not run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "device_check.sh"
sys.path.insert(0, str(REPO / "bench"))

from device_check_report import report  # noqa: E402


def test_dry_run_lists_every_benchmark_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OUT": str(out), "PYTHON": sys.executable},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stdout.splitlines() if x.startswith("== ")]
    names = [x.split()[1] for x in lines]
    assert names == ["loop_bench", "study_bench", "train_bench", "ddpm_bench", "members_bench"]
    budgets = [int(x.split("budget ")[1].split("s)")[0]) for x in lines]
    assert sum(budgets) <= 9 * 60  # the whole check fits the 9-minute promise
    assert "--torch-modes eager,compile" in proc.stdout and "--torch-compile" in proc.stdout
    assert not out.exists()
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--bogus" in bad.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_report_keeps_numbers_and_flags_failures(tmp_path):
    loop = {
        "rows": [
            {
                "model": "tiny",
                "image_size": 16,
                "batch": 8,
                "bare": {"steps_per_s": 200.0, "flops_per_step": 2e9},
                "engine_device_data_on": {"steps_per_s": 190.0, "pct_of_bare": 95.0},
                "engine_device_data_off": {"steps_per_s": 150.0, "pct_of_bare": 75.0},
                "mfu_bare_pct": 12.5,
            }
        ]
    }
    study = {"config": "rare_tumour", "total_s": 58.2, "phases_s": {"train dcgan": 20.0}}
    (tmp_path / "loop_bench.json").write_text(json.dumps(loop))
    (tmp_path / "study_bench.json").write_text(json.dumps(study))
    for name, rc in (("loop_bench", 0), ("study_bench", 0), ("train_bench", 124)):
        (tmp_path / f"{name}.status.json").write_text(json.dumps({"rc": rc, "wall_s": 7}))
    merged, md = report(tmp_path)
    assert merged["loop_bench"]["result"]["rows"][0]["bare"]["steps_per_s"] == 200.0
    assert "| tiny | 16 | 8 | 200.00 | 190.00 | 95% | 150.00 | 75% | 2.000 | 12.5% |" in md
    assert "| **total** | **58.2** |" in md and "| train dcgan | 20.0 |" in md
    train_section = md.split("(`train_bench`)")[1].split("##")[0]
    assert "did not complete" in train_section and "exit 124" in train_section
    assert "not run" in md.split("(`ddpm_bench`)")[1]
