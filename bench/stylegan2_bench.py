"""StyleGAN2-ADA training-step throughput: jaxsynth (the engine's Task, jitted) next to its
PyTorch twin (bench/torch_stylegan2.py: the same G, D and step in plain PyTorch ops), in the same
run (issue 17; goal: JAX ≥ 1.5× the eager twin at 64 px on CPU).

    flock /tmp/jaxsynth-heavy.lock python bench/stylegan2_bench.py --torch-python PATH
    python bench/stylegan2_bench.py --variants smoke --steps 1 --out /tmp/sg2.json  # check

Per config variant (default `study32,study64` of configs/stylegan2.py, batch from the config)
the JAX step is compiled as the engine runs it on CPU: one program per regulariser phase
(`StyleGan2Task.step_phase`; compile time summed and reported separately), with jaxsynth's XLA
flags; `--dynamic` times the one program with every branch inside instead (the K-step scan's
step: `lax.cond` on GPU/TPU, compute-and-select on CPU). A lazy-regularisation cycle of
lcm(r1_interval, pl_interval) steps has up to four kinds of step (plain, PL, R1, R1+PL; 12, 3,
0, 1 of 16 at the study configs); each kind is timed over `--steps` calls after one warm-up
(benchutil.time_call), on both sides, and the cycle average weights them by their frequency, so
both sides do the same work per cycle. ADA runs at p = `--ada-p` (> 0: the augmentation is on
for every image D sees). The twin runs in a subprocess on the same shapes (eager, and
torch.compile if asked), so both see the same machine load; G and D parameter counts of both
sides are printed and must be equal (exit 1 otherwise). Prints a table, writes JSON (`--out`).

Measure on a quiet machine: under background load torch eager's OpenMP threads stall (a :smoke
eager step varied 0.25-11 s between runs on a shared 2-core machine); `--torch-threads 1` is
the check.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="study32,study64", help="configs/stylegan2.py variants")
    p.add_argument("--steps", type=int, default=3, help="timed steps per kind (after 1 warm-up)")
    p.add_argument("--ada-p", type=float, default=0.2, help="ADA strength during the timing")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="time the one dynamic program (all branches) instead of one program per phase",
    )
    p.add_argument(
        "--torch-python",
        default=os.environ.get("JAXSYNTH_TORCH_PYTHON", ""),
        help="interpreter with torch (or env JAXSYNTH_TORCH_PYTHON); empty: JAX only",
    )
    p.add_argument("--torch-modes", default="eager", help="comma list of eager, compile")
    p.add_argument(
        "--torch-fir",
        default="conv",
        choices=("conv", "phase"),
        help="twin's FIR resampling: one depthwise (transposed) conv, or jaxsynth's phase form",
    )
    p.add_argument(
        "--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)"
    )
    p.add_argument("--out", default=str(HERE / "results" / "stylegan2_bench.json"))
    return p.parse_args(argv)


def cycle_kinds(r1_interval: int, pl_interval: int) -> dict:
    """{kind: {"step": a step index of that kind, "weight": its share of the lazy cycle}} for
    R1 firing at step % r1_interval == 0 and PL at step % pl_interval == 0 (0 = never)."""
    active = [i for i in (r1_interval, pl_interval) if i > 0]
    length = math.lcm(*active) if active else 1
    kinds: dict = {}
    for i in range(length):
        r1 = r1_interval > 0 and i % r1_interval == 0
        pl = pl_interval > 0 and i % pl_interval == 0
        name = "+".join(n for n, on in (("r1", r1), ("pl", pl)) if on) or "plain"
        # a step of the second cycle: away from step 0's EMA ramp start
        k = kinds.setdefault(name, {"step": length + i, "weight": 0.0})
        k["weight"] += 1.0 / length
    return kinds


def twin_spec(config, ada_p: float) -> dict:
    """The shapes and hyper-parameters the twin needs, from a jaxsynth StyleGAN2 config."""
    m, s, a, o = config.model, config.stylegan, config.ada, config.optim
    spec = {"image_size": int(config.image_size), "batch": int(config.batch_size)}
    for k in ("z_dim", "w_dim", "num_classes", "mapping_layers", "g_channel_base"):
        spec[k] = int(m[k])
    for k in ("g_channel_max", "d_channel_base", "d_channel_max", "cmap_dim"):
        spec[k] = int(m[k])
    spec.update(mbstd_group=int(m.mbstd_group), mbstd_channels=int(m.mbstd_channels))
    spec["mapping_lr_mul"] = float(m.mapping_lr_mul)
    for k in ("r1_interval", "pl_interval", "pl_batch_shrink"):
        spec[k] = int(s[k])
    for k in ("r1_gamma", "pl_weight", "pl_decay", "style_mixing", "ema_kimg", "ema_rampup"):
        spec[k] = float(s[k])
    for k in ("g_lr", "d_lr", "b1", "b2", "eps"):
        spec[k] = float(o[k])
    spec.update(
        ada_groups=str(a.augment),
        ada_p=float(ada_p) if a.augment else 0.0,
        ada_target=float(a.target),
        ada_interval=int(a.interval),
        ada_kimg=float(a.kimg),
    )
    r1 = spec["r1_interval"] if spec["r1_gamma"] > 0 else 0
    pl = spec["pl_interval"] if spec["pl_weight"] > 0 else 0
    spec["kinds"] = cycle_kinds(r1, pl)
    return spec


def jax_side(variant: str, steps: int, ada_p: float, dynamic: bool) -> tuple[dict, dict]:
    import jax
    import jax.numpy as jnp
    from benchutil import matmul_peak, time_call

    from jaxsynth.config import load_config
    from jaxsynth.train.task import build_task

    config = load_config(str(HERE.parent / "configs" / "stylegan2.py") + f":{variant}")
    task = build_task(config)
    spec = twin_spec(config, ada_p)
    size, b = spec["image_size"], spec["batch"]
    k = jax.random.split(jax.random.key(0), 2)
    batch = {
        "image": jax.random.uniform(k[0], (b, size, size, 3)) * 2 - 1,
        "label": jax.random.randint(k[1], (b,), 0, max(spec["num_classes"], 2)),
    }
    state = jax.jit(task.init)(jax.random.key(1), batch)
    state = state.replace(aux={**state.aux, "ada_p": jnp.asarray(spec["ada_p"], jnp.float32)})
    programs: dict = {}  # phase (None: dynamic) -> (compiled step, its model FLOPs)
    compile_s = 0.0

    def program(phase):
        nonlocal compile_s
        if phase not in programs:
            kw = {} if phase is None else {"phase": phase}
            fn = jax.jit(
                lambda st, bt: task.train_step(st, bt, jax.random.fold_in(st.rng, st.step), **kw)
            )
            t0 = time.perf_counter()
            lowered = fn.lower(state, batch)
            compiled = lowered.compile()
            compile_s += time.perf_counter() - t0
            # FLOPs of the program as written (XLA's cost analysis before optimisation): what
            # the step must compute, the same count for the twin; the dynamic program's count
            # includes both branches of each regulariser.
            cost = lowered.cost_analysis() or {}
            cost = cost[0] if isinstance(cost, list) else cost
            programs[phase] = (compiled, float(cost.get("flops", float("nan"))))
        return programs[phase]

    peak = matmul_peak() * 1e9
    kinds = {}
    for name, kind in spec["kinds"].items():
        st = state.replace(step=jnp.asarray(kind["step"], jnp.int32))
        compiled, flops = program(None if dynamic else task.step_phase(kind["step"]))
        sec = time_call(compiled, (st, batch), steps)
        kinds[name] = {"s_per_step": sec, "gflop": flops / 1e9, "gflops_per_s": flops / sec / 1e9}
        kinds[name]["of_matmul_peak"] = flops / sec / peak
        print(
            f"  jax {variant} {name}: {sec:.3f} s/step, {flops / 1e9:.1f} GFLOP, "
            f"{flops / sec / 1e9:.1f} GFLOP/s ({flops / sec / peak:.0%} of the matmul peak)",
            flush=True,
        )
    print(f"  jax {variant}: {len(programs)} program(s) compiled in {compile_s:.1f} s", flush=True)
    sec = sum(spec["kinds"][n]["weight"] * r["s_per_step"] for n, r in kinds.items())
    n_params = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    out = {
        "steps_per_s": 1 / sec,
        "images_per_s": b / sec,
        "compile_s": compile_s,
        "programs": "dynamic" if dynamic else "per phase",
        "kinds": kinds,
        "matmul_peak_gflops": peak / 1e9,
        "cycle_gflop": sum(spec["kinds"][n]["weight"] * r["gflop"] for n, r in kinds.items()),
        "g_params": n_params(state["generator"].params),
        "d_params": n_params(state["discriminator"].params),
    }
    return out, spec


def torch_side(spec: dict, args) -> dict:
    if not args.torch_python or not Path(args.torch_python).is_file():
        return {"error": f"no PyTorch interpreter at '{args.torch_python}'"}
    full = {
        **spec,
        "steps": args.steps,
        "modes": args.torch_modes.split(","),
        "fir": args.torch_fir,
    }
    if args.torch_threads > 0:
        full["threads"] = args.torch_threads
    from twin import run_twin

    return run_twin(args.torch_python, HERE / "torch_stylegan2.py", full)


def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def main(argv=None) -> int:
    from jaxsynth import xla_flags

    xla_flags.apply()
    args = parse_args(argv)
    import jax

    rows, mismatch = [], False
    for variant in args.variants.split(","):
        j, spec = jax_side(variant, args.steps, args.ada_p, args.dynamic)
        t = torch_side(spec, args)
        row = {"variant": variant, "size": spec["image_size"], "batch": spec["batch"]}
        row.update(jax=j, torch=t, spec=spec)
        for mode in ("eager", "compile"):
            sps = (t.get(mode) or {}).get("steps_per_s")
            if sps:
                row[f"jax_over_torch_{mode}"] = j["steps_per_s"] / sps
        counts = f"G {j['g_params']:,} / D {j['d_params']:,} params (JAX)"
        if "g_params" in t:
            same = (t["g_params"], t["d_params"]) == (j["g_params"], j["d_params"])
            mismatch |= not same
            counts += (
                f", G {t['g_params']:,} / D {t['d_params']:,} (torch){'' if same else ' MISMATCH'}"
            )
        rows.append(row)
        eager = (t.get("eager") or {}).get("steps_per_s")
        print(
            f"{variant} ({spec['image_size']} px, batch {spec['batch']}): JAX "
            f"{j['steps_per_s']:.3f} steps/s (compile {j['compile_s']:.0f} s), torch eager "
            f"{_fmt(eager, '.3f')} steps/s; {counts}"
            + (f"; torch: {t['error']}" if "error" in t else ""),
            flush=True,
        )
    print(
        "\n| variant | size | batch | JAX compile s | JAX steps/s | torch eager steps/s "
        "| torch compile steps/s | JAX / torch eager | GFLOP/step (cycle mean) "
        "| JAX / torch eager, % of matmul peak | G params | D params |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        j, t = r["jax"], r["torch"]
        ratio = r.get("jax_over_torch_eager")
        eager = (t.get("eager") or {}).get("steps_per_s")
        per_peak = j["cycle_gflop"] / j["matmul_peak_gflops"]  # × steps/s = share of the peak
        mfu = f"{per_peak * j['steps_per_s']:.0%} / " + (
            "-" if not eager else f"{per_peak * eager:.0%}"
        )
        print(
            f"| {r['variant']} | {r['size']} | {r['batch']} | {j['compile_s']:.0f} | "
            f"{j['steps_per_s']:.3f} | {_fmt((t.get('eager') or {}).get('steps_per_s'), '.3f')} | "
            f"{_fmt((t.get('compile') or {}).get('steps_per_s'), '.3f')} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | {j['cycle_gflop']:.1f} | {mfu} | "
            f"{j['g_params']:,} | {j['d_params']:,} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "backend": jax.default_backend(),
        "devices": str(jax.devices()),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "steps_per_kind": args.steps,
        "ada_p": args.ada_p,
        "torch_fir": args.torch_fir,
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")
    if mismatch:
        print("parameter counts differ between JAX and the twin", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
