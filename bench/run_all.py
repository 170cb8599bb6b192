"""Run every benchmark in bench/ and write one summary: bench/results.json + bench/results.md.

    python bench/run_all.py            # full settings of every benchmark
    python bench/run_all.py --quick    # small settings (minutes, not an hour)
    python bench/run_all.py --collect-only   # summarise bench/results/*.json only

Each benchmark script runs as its own subprocess (one at a time, so they do not compete with each
other; PyTorch runs inside them, interleaved with JAX model by model) and writes
`bench/results/<name>.json`; its console output goes to `bench/results/logs/<name>.log`. A script
that is absent is skipped with that reason; one that fails is reported with its exit code and
its previous JSON (if any) is marked stale. Then this script measures the machine's float32
matmul peak (a large jitted `jnp.dot`, best of N) and derives, per model:

* JAX / PyTorch: the same model's training (or sampling / feature) throughput, same run;
* MFU: model FLOPs per step (XLA cost analysis of the compiled step) x steps/s / matmul peak;
* loader img/s / training img/s: whether the input pipeline can feed the model (goal >= 10x).

`bench/results.md` is the table that goes into BENCHMARKS.md. CPU timings on a shared machine are
noisy: the load average at start and end is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

# name -> (quick arguments, reason they are enough). Full runs use each script's defaults.
BENCHMARKS: dict[str, list[str]] = {
    "train_bench": ["--sizes", "64", "--batch", "32", "--steps", "2", "--torch-modes", "eager"],
    "data_bench": ["--seconds", "1.5"],
    "ddpm_bench": [
        "--train-steps",
        "3",
        "--warmup",
        "1",
        "--ddim-steps",
        "10",
        "--timesteps",
        "100",
    ],
    "fid_bench": ["--num-images", "16", "--batch", "8", "--repeats", "1"],
    "sd_bench": ["--steps", "5", "--num", "4", "--schedulers", "ddim,dpm"],
    # the profiles behind the MFU / ratio explanations in BENCHMARKS.md
    "mfu_breakdown": ["--rounds", "1", "--batch", "16"],
    "strided_conv_bench": ["--rounds", "1", "--sizes", "32"],
}
GOALS = {"jax_over_torch": 1.5, "best_mfu_pct": 50.0, "loader_over_training": 10.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small settings for every benchmark")
    p.add_argument("--collect-only", action="store_true", help="do not run; summarise results/")
    p.add_argument("--only", default="", help="comma-separated subset of " + ",".join(BENCHMARKS))
    p.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark")
    p.add_argument("--peak-n", type=int, default=0, help="matmul side (0: 2048 CPU, 8192 GPU)")
    p.add_argument("--peak-reps", type=int, default=10)
    p.add_argument("--results-dir", default=str(RESULTS), help="where the benchmarks write JSON")
    p.add_argument("--out", default=str(HERE / "results.json"))
    p.add_argument("--md", default=str(HERE / "results.md"))
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- running
def accepts_quick(script: Path) -> bool:
    """Whether the script has its own --quick flag (then it wins over our argument list)."""
    try:
        out = subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        return False
    return "--quick" in out.stdout


def run_benchmark(name: str, quick: bool, timeout: float) -> dict:
    script = HERE / f"{name}.py"
    if not script.is_file():
        return {"status": "skipped", "reason": f"bench/{name}.py is not in the tree"}
    out_json = RESULTS / f"{name}.json"
    cmd = [sys.executable, str(script), "--out", str(out_json)]
    if quick:
        cmd += ["--quick"] if accepts_quick(script) else BENCHMARKS[name]
    log = RESULTS / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[run_all] {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    with log.open("w") as f:
        try:
            proc = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, cwd=str(ROOT), timeout=timeout
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.time() - t0
    fresh = out_json.is_file() and out_json.stat().st_mtime >= t0
    status = "ok" if code == 0 and fresh else "failed"
    print(f"[run_all] {name}: {status} in {wall:.0f} s (log {log})", flush=True)
    return {
        "status": status,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "command": " ".join(
            [
                "python",
                *[
                    str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c
                    for c in cmd[1:]
                ],
            ]
        ),
        "log": str(log),
    }


def matmul_peak(n: int, reps: int) -> dict:
    """Best-of-`reps` float32 GFLOP/s of an n x n jitted matmul on the default device."""
    import jax
    import jax.numpy as jnp

    platform_name = jax.devices()[0].platform
    n = n or (2048 if platform_name == "cpu" else 8192)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return {
        "gflops": 2 * n**3 / min(times) / 1e9,
        "median_gflops": 2 * n**3 / sorted(times)[len(times) // 2] / 1e9,
        "n": n,
        "reps": reps,
        "device": str(jax.devices()[0]),
        "platform": platform_name,
    }


def ddpm_flops_per_step(settings: dict) -> float | None:
    """XLA's FLOP count of one DDPM train step with ddpm_bench's settings (not timed)."""
    import jax
    import jax.numpy as jnp

    from jaxsynth.config import load_config
    from jaxsynth.tasks.ddpm import make_task

    c = load_config(str(ROOT / "configs" / "ddpm.py"))
    c.image_size = settings["image_size"]
    c.batch_size = settings["batch"]
    c.model.base_channels = settings["base"]
    c.model.channel_mults = tuple(int(v) for v in str(settings["mults"]).split(","))
    c.model.num_res_blocks = settings["num_res"]
    c.model.attention_resolutions = tuple(
        int(v) for v in str(settings["attn"]).split(",") if v.strip()
    )
    c.model.num_heads = settings["heads"]
    c.model.dropout = 0.0
    c.ddpm.timesteps = settings["timesteps"]
    task = make_task(c)
    s, b = c.image_size, c.batch_size
    batch = {
        "image": jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32),
        "label": jax.ShapeDtypeStruct((b,), jnp.int32),
    }
    state = jax.eval_shape(task.init, jax.random.key(0), batch)
    lowered = jax.jit(task.train_step).lower(state, batch, jax.random.key(1))
    cost = lowered.cost_analysis() or {}
    flops = cost.get("flops")
    return float(flops) if flops else None


# ----------------------------------------------------------------------------- summarising
def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(x, digits=2, suffix=""):
    if x is None:
        return "-"
    return f"{x:.{digits}f}{suffix}"


def summarise(peak: dict, runs: dict, ddpm_flops: float | None) -> dict:
    """One flat dict of the comparisons BENCHMARKS.md reports (None where a number is missing)."""
    peak_gflops = peak["gflops"]
    training: list[dict] = []
    tb = load("train_bench")
    if tb:
        for r in tb.get("rows", []):
            if r.get("impl", "phase") != "phase":
                continue
            # train_bench.py writes nested {"jax": {...}, "torch": {...}}; hand-merged partial
            # results use flat keys (jax_steps_per_s, torch_eager_steps_per_s, ...): read both.
            jax_r, torch = r.get("jax") or {}, r.get("torch") or {}
            steps = jax_r.get("steps_per_s") or r.get("jax_steps_per_s")
            if not steps:
                continue
            eager = (torch.get("eager") or {}).get("steps_per_s") or r.get(
                "torch_eager_steps_per_s"
            )
            comp = (torch.get("compile") or {}).get("steps_per_s") or r.get(
                "torch_compile_steps_per_s"
            )
            flops = jax_r.get("flops_per_step") or (
                r["model_gflop_per_step"] * 1e9 if r.get("model_gflop_per_step") else None
            )
            training.append(
                {
                    "model": r["model"],
                    "image_size": r["image_size"],
                    "images_per_step": r["images_per_step"],
                    "jax_img_per_s": steps * r["images_per_step"],
                    "torch_eager_img_per_s": eager * r["images_per_step"] if eager else None,
                    "torch_compile_img_per_s": comp * r["images_per_step"] if comp else None,
                    "jax_over_torch_eager": steps / eager if eager else None,
                    "jax_over_torch_compile": steps / comp if comp else None,
                    "gflop_per_step": flops / 1e9 if flops else None,
                    "mfu_pct": 100 * flops * steps / 1e9 / peak_gflops if flops else None,
                }
            )
    db = load("ddpm_bench")
    if db and db.get("jax"):
        jax_ips = db["jax"]["train_img_per_s"]
        batch = db["settings"]["batch"]
        torch_runs = [v for v in (db.get("torch") or {}).values() if isinstance(v, dict)]
        torch_ips = max((t.get("train_img_per_s") or 0 for t in torch_runs), default=0) or None
        training.append(
            {
                "model": "ddpm",
                "image_size": db["settings"]["image_size"],
                "images_per_step": batch,
                "jax_img_per_s": jax_ips,
                "torch_eager_img_per_s": torch_ips,
                "torch_compile_img_per_s": None,
                "jax_over_torch_eager": jax_ips / torch_ips if torch_ips else None,
                "jax_over_torch_compile": None,
                "gflop_per_step": ddpm_flops / 1e9 if ddpm_flops else None,
                "mfu_pct": (
                    100 * ddpm_flops * jax_ips / batch / 1e9 / peak_gflops if ddpm_flops else None
                ),
            }
        )
    loader: list[dict] = []
    data = load("data_bench")
    if data:
        for row in data.get("rows", []):
            best_train = [t for t in training if t["image_size"] == row["size"]]
            fastest = max((t["jax_img_per_s"] for t in best_train), default=None)
            loader.append(
                {
                    "image_size": row["size"],
                    "workers": row["workers"],
                    "loader_img_per_s": row["grain_img_s"],
                    "fastest_training_img_per_s": fastest,
                    "loader_over_training": row["grain_img_s"] / fastest if fastest else None,
                }
            )
    sampling: list[dict] = []
    if db and db.get("jax"):
        j = db["jax"]
        torch_runs = [v for v in (db.get("torch") or {}).values() if isinstance(v, dict)]
        t_ddim = max((t.get("ddim_img_per_s") or 0 for t in torch_runs), default=0) or None
        for key, value in j.items():
            if key.endswith("_img_per_s") and key != "train_img_per_s":
                name = key[: -len("_img_per_s")]
                torch_ips = t_ddim if name.startswith("ddim") else None
                sampling.append(
                    {
                        "what": f"DDPM sampler {name}",
                        "jax_img_per_s": value,
                        "torch_img_per_s": torch_ips,
                        "jax_over_torch": value / torch_ips if torch_ips else None,
                    }
                )
    sd = load("sd_bench")
    if sd:
        for r in sd.get("rows", []):
            sampling.append(
                {
                    "what": f"SD {sd.get('size')} px {r['scheduler']} x{sd.get('steps')} steps",
                    "jax_img_per_s": r["images_per_s"],
                    "torch_img_per_s": None,
                    "jax_over_torch": None,
                }
            )
    fid = load("fid_bench")
    if fid:
        sampling.append(
            {
                "what": "FID Inception features (299 px)",
                "jax_img_per_s": fid["jaxsynth_flax_img_per_s"],
                "torch_img_per_s": fid["pytorch_fid_img_per_s"],
                "jax_over_torch": fid["ratio_flax_over_torch"],
            }
        )
    mfus = [t["mfu_pct"] for t in training if t["mfu_pct"] is not None]
    return {
        "training": training,
        "loader": loader,
        "sampling_and_features": sampling,
        "best_mfu_pct": max(mfus) if mfus else None,
        "goals": GOALS,
        "runs": runs,
    }


def markdown(result: dict) -> str:
    m, peak, s = result["machine"], result["matmul_peak"], result["summary"]
    lines = [
        f"Machine: {m['platform']}, {m['cpu_count']} CPUs, device {peak['device']}; "
        f"jax {m['jax']}. Measured float32 matmul peak ({peak['n']}x{peak['n']} `jnp.dot`, best "
        f"of {peak['reps']}): **{peak['gflops']:.1f} GFLOP/s** "
        f"(median {peak['median_gflops']:.1f}). "
        f"Load average at start {m['loadavg_start'][0]:.1f}, at end {m['loadavg_end'][0]:.1f}"
        + (
            " (a shared, busy machine: timings are noisy)."
            if m["loadavg_end"][0] > 1.5 * m["cpu_count"]
            else "."
        )
        + f" Mode: {'--quick' if result['quick'] else 'full'}; {result['date']}.",
        "",
        "**Training step** (JAX = jaxsynth's compiled engine step; PyTorch = the same "
        "architecture, same run; MFU = model FLOPs/step x steps/s / matmul peak)",
        "",
        "| model | px | img/step | JAX img/s | PyTorch eager img/s | torch.compile img/s "
        f"| JAX / PyTorch (goal ≥ {GOALS['jax_over_torch']}×) | GFLOP/step | MFU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in s["training"]:
        ratio = t["jax_over_torch_eager"]
        mark = "" if ratio is None else (" ✓" if ratio >= GOALS["jax_over_torch"] else " ✗")
        lines.append(
            f"| {t['model']} | {t['image_size']} | {t['images_per_step']} | "
            f"{_fmt(t['jax_img_per_s'], 1)} | {_fmt(t['torch_eager_img_per_s'], 1)} | "
            f"{_fmt(t['torch_compile_img_per_s'], 1)} | {_fmt(ratio, 2, '×')}{mark} | "
            f"{_fmt(t['gflop_per_step'], 1)} | {_fmt(t['mfu_pct'], 1, ' %')} |"
        )
    best = s["best_mfu_pct"]
    if best is not None:
        ok = "✓" if best >= GOALS["best_mfu_pct"] else "✗"
        lines.append(
            f"\nBest MFU: {best:.1f} % of the measured matmul peak "
            f"(goal ≥ {GOALS['best_mfu_pct']:.0f} %) {ok}."
        )
    if s["loader"]:
        lines += [
            "",
            "**Input pipeline vs training** (Grain loader, flip/rot90 augmentation, batch 64; "
            "fastest model's JAX training img/s at the same size)",
            "",
            f"| px | workers | loader img/s | training img/s | loader / training (goal ≥ "
            f"{GOALS['loader_over_training']:.0f}×) |",
            "|---|---|---|---|---|",
        ]
        for r in s["loader"]:
            ratio = r["loader_over_training"]
            mark = (
                "" if ratio is None else (" ✓" if ratio >= GOALS["loader_over_training"] else " ✗")
            )
            lines.append(
                f"| {r['image_size']} | {r['workers']} | {_fmt(r['loader_img_per_s'], 0)} | "
                f"{_fmt(r['fastest_training_img_per_s'], 1)} | {_fmt(ratio, 1, '×')}{mark} |"
            )
    if s["sampling_and_features"]:
        lines += [
            "",
            "**Sampling and features**",
            "",
            "| what | JAX img/s | PyTorch img/s | JAX / PyTorch |",
            "|---|---|---|---|",
        ]
        for r in s["sampling_and_features"]:
            lines.append(
                f"| {r['what']} | {_fmt(r['jax_img_per_s'], 3)} | "
                f"{_fmt(r['torch_img_per_s'], 3)} | {_fmt(r['jax_over_torch'], 2, '×')} |"
            )
    lines += ["", "Benchmark runs:", ""]
    for name, run in s["runs"].items():
        detail = run.get("reason") or run.get("command") or ""
        extra = f", {run['wall_s']} s" if "wall_s" in run else ""
        lines.append(f"- `{name}`: {run['status']}{extra}; {detail}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    global RESULTS
    RESULTS = Path(args.results_dir).resolve()
    load_start = list(os.getloadavg())
    names = [n for n in (args.only.split(",") if args.only else BENCHMARKS) if n]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"run_all: unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}", file=sys.stderr
        )
        return 2
    runs: dict[str, dict] = {}
    for name in BENCHMARKS:
        if name not in names:
            continue
        if args.collect_only:
            present = (RESULTS / f"{name}.json").is_file()
            runs[name] = {
                "status": "collected" if present else "missing",
                "reason": "--collect-only",
            }
        else:
            runs[name] = run_benchmark(name, args.quick, args.timeout)
    for name, run in runs.items():
        if run["status"] == "failed" and (RESULTS / f"{name}.json").is_file():
            run["stale_json"] = True

    from jaxsynth import xla_flags

    xla_flags.apply()  # the same flags the benchmarks and the engine use
    import jax

    peak = matmul_peak(args.peak_n, args.peak_reps)
    print(f"[run_all] matmul peak {peak['gflops']:.1f} GFLOP/s on {peak['device']}", flush=True)
    ddpm_flops = None
    db = load("ddpm_bench")
    if db and "settings" in db:
        try:
            ddpm_flops = ddpm_flops_per_step(db["settings"])
        except Exception as e:  # noqa: BLE001 - a missing FLOP count must not lose the table
            print(f"[run_all] DDPM FLOPs unavailable: {e}", file=sys.stderr)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": bool(args.quick),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "loadavg_start": load_start,
            "loadavg_end": list(os.getloadavg()),
        },
        "matmul_peak": peak,
        "summary": summarise(peak, runs, ddpm_flops),
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    md = markdown(result)
    Path(args.md).write_text(md)
    print(md)
    print(f"[run_all] wrote {args.out} and {args.md}")
    failed = [n for n, r in runs.items() if r["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
