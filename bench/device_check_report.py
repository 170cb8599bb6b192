"""Merge the JSONs of `bench/device_check.sh` into one `device_check.json` + `device_check.md`.

    python bench/device_check_report.py OUT_DIR

Reads `loop_bench.json`, `study_bench.json`, `train_bench.json`, `ddpm_bench.json`,
`members_bench.json` and each
benchmark's `<name>.status.json` (exit code, wall time) from OUT_DIR; a missing or failed
benchmark is listed as such, never silently dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = ("loop_bench", "study_bench", "train_bench", "ddpm_bench", "members_bench")


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _f(x, fmt=".2f") -> str:
    return "-" if x is None or x != x else format(x, fmt)


def loop_table(res: dict) -> list[str]:
    lines = [
        "| model | px | batch | bare steps/s | engine (device data) | % of bare | "
        "engine (Grain) | % of bare | GFLOP/step | MFU bare |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res.get("rows", []):
        on = r.get("engine_device_data_on") or r.get("engine") or {}
        off = r.get("engine_device_data_off") or {}
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['batch']} | "
            f"{_f(r['bare']['steps_per_s'])} | {_f(on.get('steps_per_s'))} | "
            f"{_f(on.get('pct_of_bare'), '.0f')}% | {_f(off.get('steps_per_s'))} | "
            f"{_f(off.get('pct_of_bare'), '.0f')}% | "
            f"{_f(r['bare']['flops_per_step'] / 1e9, '.3f')} | "
            f"{_f(r.get('mfu_bare_pct'), '.1f')}% |"
        )
    return lines


def study_table(res: dict) -> list[str]:
    lines = [f"Config `{res.get('config')}`.", "", "| phase | wall s |", "|---|---|"]
    lines += [f"| {k} | {_f(v, '.1f')} |" for k, v in res.get("phases_s", {}).items()]
    lines.append(f"| **total** | **{_f(res.get('total_s'), '.1f')}** |")
    return lines


def train_table(res: dict) -> list[str]:
    lines = [
        "| GAN | px | images/step | JAX steps/s | PyTorch eager | torch.compile | "
        "JAX / compile | GFLOP/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res.get("rows", []):
        t = r.get("torch") or {}
        eager = (t.get("eager") or {}).get("steps_per_s")
        comp = (t.get("compile") or {}).get("steps_per_s")
        jsps = (r.get("jax") or {}).get("steps_per_s")
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['images_per_step']} | {_f(jsps)} | "
            f"{_f(eager)} | {_f(comp)} | {_f(jsps / comp if jsps and comp else None)}× | "
            f"{_f(r.get('model_gflop_per_step'), '.2f')} |"
        )
    return lines


def ddpm_table(res: dict) -> list[str]:
    lines = ["| implementation | train img/s | DDIM img/s |", "|---|---|---|"]
    jax_r = res.get("jax") or {}
    ddim = next((v for k, v in jax_r.items() if k.startswith("ddim") and "img_per_s" in k), None)
    lines.append(f"| JAX | {_f(jax_r.get('train_img_per_s'))} | {_f(ddim)} |")
    for key, t in (res.get("torch") or {}).items():
        if isinstance(t, dict):
            lines.append(
                f"| PyTorch ({key}) | {_f(t.get('train_img_per_s'))} | "
                f"{_f(t.get('ddim_img_per_s'))} |"
            )
    return lines


def members_table(res: dict) -> list[str]:
    lines = [
        "| M | mode | epochs | warm-up s | seconds | steps/s | member-steps/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res.get("rows", []):
        lines.append(
            f"| {r['members']} | {r['mode']} | {r['epochs']} | {_f(r.get('warmup_s'), '.1f')} | "
            f"{_f(r.get('seconds'))} | {_f(r.get('steps_per_s'), '.1f')} | "
            f"{_f(r.get('member_steps_per_s'), '.1f')} |"
        )
    return lines


TABLES = {
    "loop_bench": ("Engine vs bare compiled step", loop_table),
    "study_bench": ("Study wall time by phase", study_table),
    "train_bench": ("GAN training step vs PyTorch", train_table),
    "ddpm_bench": ("DDPM U-Net", ddpm_table),
    "members_bench": ("Many classifiers: sequential vs member axis", members_table),
}


def report(out: Path) -> tuple[dict, str]:
    merged: dict = {}
    md = ["# Device check", ""]
    for name in NAMES:
        res = _load(out / f"{name}.json")
        status = _load(out / f"{name}.status.json") or {}
        merged[name] = {"status": status, "result": res}
        title, table = TABLES[name]
        md.append(f"## {title} (`{name}`)")
        md.append("")
        rc = status.get("rc")
        note = f"exit {rc}, {status.get('wall_s', '?')} s" if status else "not run"
        if rc not in (0, None) or res is None:
            md.append(f"**did not complete** ({note}; see `{name}.log`)")
        else:
            md.append(f"({note})")
        if res is not None:
            md += ["", *table(res)]
        md.append("")
    return merged, "\n".join(md)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: device_check_report.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    merged, md = report(out)
    (out / "device_check.json").write_text(json.dumps(merged, indent=2))
    (out / "device_check.md").write_text(md)
    print(md)
    print(f"wrote {out / 'device_check.json'} and {out / 'device_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
