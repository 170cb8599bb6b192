"""`jaxsynth compare RUN_A RUN_B`: would the verdicts survive a rerun?

    jaxsynth compare runs/cpu runs/gpu [--all-metrics]

Reads the two runs' results.json (a run directory or the file) and prints, for every arm and
reference both runs judged: each run's Δ [95 % CI] and verdict, whether the two Δ intervals
overlap, and whether the verdicts agree; then what differed between the runs (machine, library
versions, seeds). Exit status 0 when every shared verdict agrees and every Δ interval overlaps,
1 otherwise (so a CI job can check a rerun).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxsynth.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="where two study runs' verdicts differ")
    p.add_argument("run_a", help="run directory (or its results.json)")
    p.add_argument("run_b", help="run directory (or its results.json)")
    p.add_argument(
        "--all-metrics",
        action="store_true",
        help="every metric, not just F1, AUPRC, AUC and the verdict metric",
    )
    p.set_defaults(func=run, takes_config=False)


def load_results(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise UserError(f"{path}: no results.json (run `jaxsynth run` first)")
    res = json.loads(p.read_text())
    if "hierarchical" not in res:
        raise UserError(f"{p}: no verdicts in it (made before `jaxsynth run` had them); rerun")
    return res


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def compare_results(a: dict, b: dict, metrics: tuple[str, ...] | None = None) -> dict:
    """Rows for every (arm, reference, metric) judged in both runs, plus provenance changes."""
    primary = a["verdict_metric"]
    if metrics is None:
        metrics = tuple(dict.fromkeys(("f1", "pr_auc", "roc_auc", primary)))
    rows = []
    for arm, ha in a["hierarchical"].items():
        hb = b["hierarchical"].get(arm)
        if hb is None:
            continue
        for ref, comp_a in ha["vs"].items():
            comp_b = hb["vs"].get(ref)
            if comp_b is None:
                continue
            for m in metrics:
                da, db = comp_a[m], comp_b[m]
                rows.append(
                    {
                        "arm": arm,
                        "vs": ref,
                        "metric": m,
                        "a": da,
                        "b": db,
                        "overlap": _overlap(da["ci95"], db["ci95"]),
                        "same_verdict": da["verdict"] == db["verdict"],
                    }
                )
    only = sorted(set(a["hierarchical"]) ^ set(b["hierarchical"]))
    changed = {}
    pa, pb = a.get("provenance", {}), b.get("provenance", {})
    for group in ("machine", "libraries", "seeds"):
        ga, gb = pa.get(group, {}), pb.get(group, {})
        for k in sorted(set(ga) | set(gb)):
            if ga.get(k) != gb.get(k):
                changed[f"{group}.{k}"] = (ga.get(k), gb.get(k))
    return {"rows": rows, "arms_in_one_run_only": only, "provenance_changes": changed}


def _fmt(d: dict) -> str:
    return f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] {d['verdict']}"


def run(args: argparse.Namespace) -> int:
    a, b = load_results(args.run_a), load_results(args.run_b)
    metrics = None
    if args.all_metrics:
        first = next(iter(a["hierarchical"].values()))
        metrics = tuple(first["metrics"])
    out = compare_results(a, b, metrics)
    rows = out["rows"]
    w = max([len(f"{r['arm']} vs {r['vs']}") for r in rows] + [10]) + 2
    print(
        f"{'arm vs reference':<{w}}{'metric':<16}{'A: Δ [95% CI] verdict':<44}"
        f"{'B: Δ [95% CI] verdict':<44}overlap  verdict"
    )
    for r in rows:
        print(
            f"{r['arm'] + ' vs ' + r['vs']:<{w}}{r['metric']:<16}{_fmt(r['a']):<44}"
            f"{_fmt(r['b']):<44}{'yes' if r['overlap'] else 'NO':<9}"
            f"{'same' if r['same_verdict'] else 'DIFFERS'}"
        )
    differ = [r for r in rows if not r["same_verdict"]]
    apart = [r for r in rows if not r["overlap"]]
    print(
        f"\n{len(differ)} of {len(rows)} verdicts differ; {len(apart)} of {len(rows)} Δ "
        "intervals do not overlap."
    )
    if out["arms_in_one_run_only"]:
        print("arms in one run only: " + ", ".join(out["arms_in_one_run_only"]))
    for k, (va, vb) in out["provenance_changes"].items():
        print(f"  {k}: {va} -> {vb}")
    return 0 if not differ and not apart else 1
