"""Stable Diffusion sampling speed: seconds per image and compile time, per scheduler.

Default: the tiny random pipeline (`jaxsynth.sd.tiny`, built into a temp dir) at 64 px, which only
measures the machinery (pmap, per-image noise, resize, host transfers) on a CPU. With `--model`
it measures a real checkpoint; paper 000's setting on a GPU host is:

    python bench/sd_bench.py --model /data/sd-v1-5-flax --size 512 --steps 20 \\
        --dtype bfloat16 --batch-per-device 4 --num 32 --schedulers ddim,pndm,dpm

Per scheduler it reports the model load time, the first call (trace + XLA compile + one batch),
the XLA backend compile time alone (jax.monitoring), and the steady seconds per image over the
following batches. Prints a table and writes `bench/results/sd_bench.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", help="local SD folder (default: a tiny random pipeline)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--num", type=int, default=8, help="images per scheduler (>= 2 batches)")
    ap.add_argument("--batch-per-device", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--schedulers", default="ddim,pndm,dpm")
    ap.add_argument("--out", default="bench/results/sd_bench.json")
    args = ap.parse_args()

    from jaxsynth import xla_flags

    xla_flags.apply()
    import diffusers
    import jax

    from jaxsynth.sd.pipeline import load_pipeline, sample_images
    from jaxsynth.sd.tiny import build_tiny_pipeline

    tmp = None
    if args.model:
        model, model_name = args.model, str(Path(args.model).resolve())
    else:
        tmp = tempfile.TemporaryDirectory()
        t0 = time.perf_counter()
        model = build_tiny_pipeline(Path(tmp.name) / "tiny_sd")
        print(f"built the tiny pipeline in {time.perf_counter() - t0:.1f} s")
        model_name = "tiny random pipeline (jaxsynth.sd.tiny)"

    compile_s = [0.0]

    def on_event(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compile_s[0] += duration

    jax.monitoring.register_event_duration_secs_listener(on_event)
    rows = []
    for name in args.schedulers.split(","):
        t0 = time.perf_counter()
        loaded = load_pipeline(model, scheduler=name, dtype=args.dtype, reuse=False)
        load_s = time.perf_counter() - t0
        compile_s[0] = 0.0
        stats: dict = {}
        images = sample_images(
            None,
            loaded=loaded,
            prompt="a histopathology patch of tumour tissue",
            num=args.num,
            seed=0,
            steps=args.steps,
            guidance=args.guidance,
            scheduler=name,
            size=args.size,
            out_size=min(128, args.size),
            batch_per_device=args.batch_per_device,
            progress=False,
            stats=stats,
        )
        rate = stats["steady_images_per_s"]
        rows.append(
            {
                "scheduler": name,
                "load_s": round(load_s, 2),
                "first_call_s": round(stats["first_batch_s"], 2),
                "backend_compile_s": round(compile_s[0], 2),
                "s_per_image": round(1.0 / rate, 4) if rate else None,
                "images_per_s": round(rate, 3) if rate else None,
                "num": args.num,
                "batch_per_device": stats["batch_per_device"],
                "finite_nonconstant": bool(images.std() > 0),
            }
        )
        del loaded

    header = f"{'scheduler':<10}{'load s':>9}{'1st call s':>12}{'compile s':>11}{'s/image':>10}"
    print(f"\n{model_name}: {args.size} px, {args.steps} steps, {args.dtype}, "
          f"{jax.local_device_count()} x {jax.devices()[0].device_kind}")  # fmt: skip
    print(header)
    for r in rows:
        print(
            f"{r['scheduler']:<10}{r['load_s']:>9.2f}{r['first_call_s']:>12.2f}"
            f"{r['backend_compile_s']:>11.2f}{r['s_per_image'] or float('nan'):>10.4f}"
        )
    result = {
        "model": model_name,
        "size": args.size,
        "steps": args.steps,
        "guidance": args.guidance,
        "dtype": args.dtype,
        "devices": f"{jax.local_device_count()} x {jax.devices()[0].device_kind}",
        "platform": jax.default_backend(),
        "host": {"machine": platform.machine(), "cpu_count": os.cpu_count()},
        "load_average_1m": os.getloadavg()[0],
        "versions": {"jax": jax.__version__, "diffusers": diffusers.__version__},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "rows": rows,
        "command": "python bench/sd_bench.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
