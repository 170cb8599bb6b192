"""Engine overhead: steps/s of the real `train()` next to the bare compiled step, same model/batch.

For each model (a tiny 16-px DCGAN, where per-step host overhead shows, and the 64-px DCGAN of
`configs/dcgan.py`), measures

* **bare**: the engine's own jitted step (`make_step_fns`), one device batch, a tight loop with
  one `block_until_ready` at the end: the speed the compiled program allows;
* **engine**: `train()` for 2N steps with `log_every = N`, the steady-state window [N, 2N] read
  from the engine's progress line (compile, init and the step-0 checkpoint are outside it);
  with `train.device_data` on (batches drawn in the step) and off (Grain), when the engine has
  that switch;

plus model FLOPs per step (XLA cost analysis; counted on the CPU lowering when the backend's
analysis is empty, as on GPU) and MFU against `--peak-tflops` (or the measured f32 matmul peak).

    python bench/loop_bench.py             # tiny + dcgan64: table + bench/results/loop_bench.json
    python bench/loop_bench.py --repo DIR  # time another checkout's engine (before/after)

Run it under `flock $HEAVY_LOCK` on a shared machine.
"""

from __future__ import annotations

import argparse
import io
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
    p.add_argument(
        "--models",
        default="tiny,dcgan64",
        help="tiny | dcgan64 | dcgan128 | dcgan_study | ddpm_study (study's generators)",
    )
    p.add_argument("--steps", type=int, default=0, help="N timed steps (0: per-model default)")
    p.add_argument("--repo", default=str(HERE.parent), help="checkout whose jaxsynth to time")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU")
    p.add_argument("--out", default=str(HERE / "results" / "loop_bench.json"))
    return p.parse_args()


ARGS = parse_args()
sys.path.insert(0, str(Path(ARGS.repo).resolve()))
sys.path.insert(1, str(HERE))

from jaxsynth import xla_flags  # noqa: E402

xla_flags.apply()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from benchutil import matmul_peak, model_flops  # noqa: E402

from jaxsynth.config import load_config  # noqa: E402
from jaxsynth.data.pipeline import to_global  # noqa: E402
from jaxsynth.train.defaults import engine_config  # noqa: E402
from jaxsynth.train.loop import TrainData, train  # noqa: E402

try:  # where the engine's steps live; older checkouts (`--repo`) exported them from the loop
    from jaxsynth.train.steps import make_step_fns  # noqa: E402
except ImportError:
    from jaxsynth.train.loop import make_step_fns  # noqa: E402
from jaxsynth.train.mesh import make_mesh, replicated  # noqa: E402
from jaxsynth.train.task import build_task  # noqa: E402

# the default study's generators, as overrides of the plain configs (older checkouts, which
# `--repo` may time, have no `:study32` variants)
STUDY_GAN = (
    "model.g_base_width=32",
    "model.g_max_width=128",
    "model.d_base_width=32",
    "model.d_max_width=128",
)
STUDY_DDPM = (
    "model.base_channels=16",
    "model.channel_mults=(1, 2)",
    "model.num_res_blocks=1",
    "model.attention_resolutions=(8,)",
    "model.num_heads=1",
    "optim.warmup_steps=100",
)
MODELS = {  # name -> (config spec, overrides, image size, batch, default N on CPU / accelerator)
    "tiny": ("dcgan.py:smoke", (), 16, 8, (200, 2000)),
    "dcgan64": ("dcgan.py", (), 64, 32, (20, 1000)),
    "dcgan128": ("dcgan.py:paper", (), 128, 32, (6, 500)),
    "dcgan_study": (
        "dcgan.py",
        STUDY_GAN + ("gan.diffaugment=color,translation,cutout",),
        32,
        32,
        (100, 1000),
    ),
    "ddpm_study": ("ddpm.py", STUDY_DDPM, 32, 32, (40, 1000)),
}


def model_config(name: str):
    spec, overrides, size, batch, _ = MODELS[name]
    c = load_config(str(Path(ARGS.repo) / "configs" / spec), overrides)
    c.image_size, c.batch_size = size, batch
    return c


def data_for(config, n: int = 512) -> TrainData:
    rng = np.random.default_rng(0)
    s = config.image_size
    images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    return TrainData({"image": images, "label": rng.integers(0, 2, n).astype(np.int32)})


def time_bare(config, n: int) -> dict:
    task = build_task(config)
    mesh = make_mesh()
    rng = np.random.default_rng(0)
    s, b = config.image_size, config.batch_size
    local = {
        "image": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32),
        "label": rng.integers(0, 2, b).astype(np.int32),
    }
    batch = to_global(local, mesh)
    state = jax.jit(task.init, out_shardings=replicated(mesh))(jax.random.PRNGKey(0), local)
    step, _ = make_step_fns(task, mesh)
    flops = model_flops(step, (state, batch))
    compiled = step.lower(state, batch).compile()
    for _ in range(2):
        state, m = compiled(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(n):
        state, m = compiled(state, batch)
    jax.block_until_ready((state, m))
    return {"steps_per_s": n / (time.perf_counter() - t0), "flops_per_step": flops}


def time_engine(config, n: int, device_data: str | None) -> dict:
    c = config.copy_and_resolve_references()
    c.num_steps, c.checkpoint_every = 2 * n, 10 * n
    c.train.log_every, c.train.sample_every, c.train.ssim_every = n, 0, 0
    if device_data is not None:
        c.train.device_data = device_data
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(c, d, data_for(c), stream=out)
        wall = time.perf_counter() - t0
    rates = re.findall(r"step (\d+)/\d+ .*?\| ([\d.]+) steps/s", out.getvalue())
    steady = float(rates[-1][1]) if len(rates) >= 2 else float("nan")
    dispatch = re.findall(r"engine: (.*)", out.getvalue())
    return {"steps_per_s": steady, "wall_s": wall, "engine_line": dispatch[:1]}


def main() -> int:
    accel = jax.default_backend() != "cpu"
    peak = ARGS.peak_tflops * 1e12 or matmul_peak() * 1e9
    has_switch = "device_data" in engine_config()
    import jaxsynth

    print(f"jax {jax.__version__} on {jax.devices()[0]}; jaxsynth from {jaxsynth.__file__}")
    rows = []
    for name in ARGS.models.split(","):
        config = model_config(name)
        n = ARGS.steps or MODELS[name][4][int(accel)]
        row = {"model": name, "image_size": config.image_size, "batch": config.batch_size, "n": n}
        row["bare"] = time_bare(config, n)
        modes = ["on", "off"] if has_switch else [None]
        for mode in modes:
            key = "engine" if mode is None else f"engine_device_data_{mode}"
            row[key] = time_engine(config, n, mode)
            row[key]["pct_of_bare"] = 100 * row[key]["steps_per_s"] / row["bare"]["steps_per_s"]
        flops = row["bare"]["flops_per_step"]
        row["mfu_bare_pct"] = 100 * flops * row["bare"]["steps_per_s"] / peak
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(rows, peak)
    print()
    print(markdown(rows, peak))
    print(f"\nwrote {ARGS.out}")
    return 0


def write(rows, peak) -> None:
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "peak_flops": peak,
            "loadavg_at_end": os.getloadavg(),
        },
        "rows": rows,
    }
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(json.dumps(result, indent=2))


def markdown(rows, peak) -> str:
    lines = [
        "| model | px | batch | bare steps/s | engine steps/s (device data) | % of bare | "
        "engine steps/s (Grain) | % of bare | GFLOP/step | MFU bare |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        on = r.get("engine_device_data_on") or r.get("engine") or {}
        off = r.get("engine_device_data_off") or {}

        def f(x, fmt=".2f"):
            return "-" if x is None or x != x else format(x, fmt)

        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['batch']} | "
            f"{f(r['bare']['steps_per_s'])} | {f(on.get('steps_per_s'))} | "
            f"{f(on.get('pct_of_bare'), '.0f')}% | {f(off.get('steps_per_s'))} | "
            f"{f(off.get('pct_of_bare'), '.0f')}% | "
            f"{f(r['bare']['flops_per_step'] / 1e9, '.3f')} | {f(r['mfu_bare_pct'], '.1f')}% |"
        )
    lines.append(f"\nPeak used for MFU: {peak / 1e12:.3f} TFLOP/s.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
