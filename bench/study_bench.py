"""Per-stage wall time of a study (`jaxsynth run`), in a fresh workdir: where the minutes go.

Runs every stage of the study config (default `rare_tumour:smoke`, a quick run; pass
`--config rare_tumour` for the real number, ~13 min on a 2-core CPU before issue 14) through
the same `StageRunner` as `jaxsynth run`, records each stage's wall time from the runner's own
log, and sums them by phase (split, original arm, each generator's train / sample / filter,
augmented arms, report). Nothing is cached from earlier runs (a fresh temporary workdir).

    python bench/study_bench.py                               # rare_tumour:smoke
    python bench/study_bench.py --config rare_tumour          # the default study
    python bench/study_bench.py --config ratio_sweep:smoke --sweep
    python bench/study_bench.py --repo DIR                    # another checkout (before/after)

Writes bench/results/study_bench.json and prints a Markdown table. On a shared machine run it
under `flock $HEAVY_LOCK`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="rare_tumour:smoke")
    p.add_argument("--sweep", action="store_true", help="build the ratio-sweep stages")
    p.add_argument("--override", action="append", default=[], help="--config.key=value")
    p.add_argument("--repo", default=str(HERE.parent), help="checkout whose jaxsynth to time")
    p.add_argument("--out", default=str(HERE / "results" / "study_bench.json"))
    return p.parse_args()


ARGS = parse_args()
sys.path.insert(0, str(Path(ARGS.repo).resolve()))

from jaxsynth import xla_flags  # noqa: E402

xla_flags.apply()

import jax  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.study.stages import StageRunner  # noqa: E402


def phase_of(stage: str) -> str:
    if stage.startswith("arm_original"):
        return "original arm"
    if stage.startswith("arm_"):
        return "augmented / sweep arms"
    m = re.match(r"(gen|sample|synth)_(.+)", stage)
    if m:
        return f"{ {'gen': 'train', 'sample': 'sample', 'synth': 'filter+metrics'}[m[1]] } {m[2]}"
    return stage


def main() -> int:
    import jaxsynth

    config = load_config(ARGS.config, ARGS.override)
    if ARGS.sweep:
        from jaxsynth.study.sweep import build_sweep_stages as build
    else:
        from jaxsynth.study.rare_tumour import build_stages as build
    times: dict[str, float] = {}
    started: dict[str, float] = {}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
        m = re.match(r"\[stage \d+/\d+\] (\S+): (running|done)", msg)
        if m and m[2] == "running":
            started[m[1]] = time.perf_counter()
        elif m:
            times[m[1]] = time.perf_counter() - started[m[1]]

    print(f"jax {jax.__version__} on {jax.devices()[0]}; jaxsynth from {jaxsynth.__file__}")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        StageRunner(d, config, log=log).run(build(config))
        total = time.perf_counter() - t0
    phases: dict[str, float] = {}
    for name, sec in times.items():
        phases[phase_of(name)] = phases.get(phase_of(name), 0.0) + sec
    result = {
        "config": ARGS.config,
        "overrides": ARGS.override,
        "sweep": ARGS.sweep,
        "total_s": total,
        "phases_s": phases,
        "stages_s": times,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "loadavg_at_end": os.getloadavg(),
        },
    }
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(json.dumps(result, indent=2))
    print("\n| phase | wall s |\n|---|---|")
    for k, v in phases.items():
        print(f"| {k} | {v:.1f} |")
    print(f"| **total** | **{total:.1f}** |")
    print(f"\nwrote {ARGS.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
