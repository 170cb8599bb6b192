"""`jaxsynth run` with `study.cv_folds = K ≥ 2`: the whole study once per fold, then a pooled
report (Poonam et al.'s K-fold cross-validation).

Fold k is the single-split study (`rare_tumour.build_stages`: generators × generator seeds,
arms, controls, selective arms, its own report) with the split stage replaced by fold k's split
(`jaxsynth.data.folds`: test = fold k, fixed before anything of fold k trains). That split
stage's key covers `study.cv_folds` and the fold index, and every other stage reads the split
directly or through its inputs, so every stage key differs per fold and nothing is shared
between folds by mistake. Each fold lives in its own workdir, `<workdir>/fold_<k>/` (stages,
report.md, results.json, figures), resumable like any study; the leakage guard runs in each
fold's generator and arm stages against that fold's test and validation tiles.

The pooled result (`cv_report`, a cached stage of `<workdir>` whose key covers every fold's
report key) is written to `<workdir>/report.md` and `results.json` (`jaxsynth.study.cv_report`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np

from jaxsynth.config import config_to_dict
from jaxsynth.data import folds as folds_lib
from jaxsynth.data.split import save_split
from jaxsynth.study.common import SPLIT_DIR, load_stage_split
from jaxsynth.study.stages import ALL_KEYS, Stage, StageContext, StageRunner

CV_KEYS = ("study.cv_folds",)
# what the single split reads (`rare_tumour.DATA_KEYS`; this module sits below rare_tumour)
DATA_KEYS = ("seed", "image_size", "data")


def num_folds(config: ml_collections.ConfigDict) -> int:
    """`study.cv_folds` checked against the pool (one-line UserError naming the field)."""
    counts = config_to_dict(config.data.split)
    pool = folds_lib.pool_counts(counts, tuple(_class_names(config)))
    return folds_lib.check_num_folds(config.study.cv_folds, pool)


def _class_names(config) -> list[str]:
    """Class names as the split counts name them (`NATIVE:name` renames to `name`)."""
    return [c.split(":")[-1] for c in config.data.classes]


def fold_dir(workdir: Path, fold: int) -> Path:
    return Path(workdir) / f"fold_{fold}"


def fold_split_stage(fold: int) -> Stage:
    """The split stage of fold `fold`: the same stage name and output layout as the single
    split (`rare_tumour.split_stage`), so every later stage reads it unchanged."""

    def fn(ctx: StageContext) -> dict:
        split = folds_lib.build_cv_split(ctx.config, fold)
        save_split(split, ctx.dir / SPLIT_DIR)
        ctx.keep(load_stage_split, split)
        skipped = split.manifest["skipped"]["skipped"]
        if skipped:
            print(f"split (fold {fold}): skipped {skipped} unusable input(s)", file=sys.stderr)
        return {
            "counts": {
                n: np.bincount(split.split(n).labels, minlength=len(split.class_names)).tolist()
                for n in ("train", "val", "test")
            },
            "class_names": list(split.class_names),
            "skipped": skipped,
            "cv": split.manifest["cv"],
        }

    return Stage("split", fn, config_keys=DATA_KEYS + CV_KEYS, extra_key=f"fold={fold}")


def fold_stages(stages: list[Stage], fold: int) -> list[Stage]:
    """Fold `fold`'s study: the single-split `stages` (`rare_tumour.build_stages`) with the
    split stage replaced by fold `fold`'s."""
    return [fold_split_stage(fold) if s.name == "split" else s for s in stages]


def run_cv(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    build_stages: Callable[[ml_collections.ConfigDict], list[Stage]],
    verify: bool = False,
) -> dict:
    """Every fold's study (`build_stages(config)` with the fold's split), then the pooled
    report; returns the pooled stage's results."""
    from jaxsynth.study import cv_report
    from jaxsynth.version import write_environment

    workdir = Path(workdir)
    k = num_folds(config)
    folds = []
    for fold in range(k):
        directory = fold_dir(workdir, fold)
        print(f"cv: fold {fold + 1}/{k} in {directory}", file=sys.stderr)
        directory.mkdir(parents=True, exist_ok=True)
        write_environment(directory)
        stages = fold_stages(build_stages(config), fold)
        results = StageRunner(directory, config, verify=verify).run(stages)
        folds.append(fold_outputs(workdir, fold, results))
    stage = Stage(
        "cv_report",
        cv_report.cv_report_stage(folds),
        config_keys=(ALL_KEYS,),
        outputs=cv_report.CV_OUTPUTS,
        extra_key=json.dumps([f["report_key"] for f in folds]),
    )
    write_environment(workdir)
    results = StageRunner(workdir, config, verify=verify).run([stage])
    print(results["cv_report"].get("console_table", ""), flush=True)
    print(f"report: {workdir / 'report.md'}", file=sys.stderr)
    return results


def fold_outputs(workdir: Path, fold: int, results: dict) -> dict:
    """What the pooled report reads of a finished fold: its runs per arm, its split and report
    stage directories (named by their keys, so the pooled stage's key covers them)."""
    root = fold_dir(workdir, fold) / "stages"
    runs: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    for name, res in results.items():
        if name.startswith("arm_"):
            if "skipped" in res:
                skipped[res["arm"]] = res["skipped"]
            else:
                runs.setdefault(res["arm"], []).append(res)
        elif name.startswith("arms_"):  # a generator seed's arm family
            skipped.update(res["skipped"])
            for r in res["runs"]:
                runs.setdefault(r["arm"], []).append(r)
    key = {n: results[n]["_stage"]["key"] for n in ("split", "report")}
    return {
        "fold": fold,
        "runs": runs,
        "skipped_arms": skipped,
        "split": results["split"],
        "split_dir": root / f"split-{key['split']}" / SPLIT_DIR,
        "report_dir": root / f"report-{key['report']}",
        "report_key": key["report"],
        "workdir": f"fold_{fold}",
    }
