"""FID feature extraction speed: jaxsynth's Flax Inception vs pytorch-fid, same CPU, same run.

    python bench/fid_bench.py --torch-python VENV/bin/python   # or $JAXSYNTH_TORCH_PYTHON

Both sides run the same network (pytorch-fid's FID Inception: bilinear resize to 299, 2048-d
pool3) with the same seeded weights (tests/fixtures/fid/seeded_weights.py) on the same uint8
images.
pytorch-fid runs in a child process of the torch interpreter (torch is not a jaxsynth
dependency); the two are timed alternately, `--repeats` times each, so load from other
processes hits both alike. Prints a table and writes bench/results/fid_bench.json.
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

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE_DIR = HERE.parent / "tests" / "fixtures" / "fid"  # seeded_weights.py (numpy only)

TORCH_CHILD = r"""
import json, sys, time
import numpy as np, torch
import pytorch_fid, pytorch_fid.inception as pfi
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
sys.path.insert(0, args["fixture_dir"])
import seeded_weights
# pytorch-fid's own construction; the URL loader returns the seeded weights (activations O(1):
# an untrained default init lets activations decay into denormals, which slows CPUs unfairly).
template = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None).state_dict()
sd = {k: (torch.from_numpy(seeded_weights.tensor(k, tuple(v.shape)))
          if v.dtype == torch.float32 else v) for k, v in template.items()}
pfi.load_state_dict_from_url = lambda *a, **k: sd
model = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
imgs = np.load(args["images"])
x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
b = args["batch"]
def run():
    with torch.no_grad():
        for s in range(0, len(x), b):
            model(x[s:s + b].float() / 255.0)[0]
run()  # warm-up
out = []
for _ in range(args["repeats"]):
    t = time.perf_counter(); run(); out.append(len(x) / (time.perf_counter() - t))
print(json.dumps({"img_per_s": out, "torch": torch.__version__,
                  "pytorch_fid": pytorch_fid.__version__, "threads": torch.get_num_threads()}))
"""


def bench_jax(images: np.ndarray, batch: int) -> tuple[callable, dict]:
    import jax

    from jaxsynth.eval.features import InceptionExtractor

    sys.path.insert(0, str(FIXTURE_DIR))
    import seeded_weights

    variables = seeded_weights.flax_inception_variables()
    t0 = time.perf_counter()
    extract = InceptionExtractor(variables=variables, batch_size=batch)
    extract(images[:batch])  # compile
    info = {"compile_s": time.perf_counter() - t0, "jax": jax.__version__}
    info["backend"] = jax.default_backend()

    def run() -> float:
        t = time.perf_counter()
        extract(images)
        return len(images) / (time.perf_counter() - t)

    return run, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--torch-python",
        default=os.environ.get("JAXSYNTH_TORCH_PYTHON", ""),
        help="PyTorch interpreter with pytorch-fid (default $JAXSYNTH_TORCH_PYTHON)",
    )
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--image-size", type=int, default=96, help="input side before the 299 resize")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=str(HERE / "results" / "fid_bench.json"))
    args = p.parse_args()
    if not args.torch_python:
        p.error(
            "needs a PyTorch interpreter with pytorch-fid: --torch-python or $JAXSYNTH_TORCH_PYTHON"
        )

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.num_images, args.image_size, args.image_size, 3), np.uint8)
    img_path = Path(args.out).with_suffix(".images.npy")
    img_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(img_path, images)

    run_jax, jax_info = bench_jax(images, args.batch)
    jax_rates, torch_rates, torch_info = [], [], {}
    child_args = json.dumps(
        {
            "images": str(img_path),
            "batch": args.batch,
            "repeats": 1,
            "threads": args.threads,
            "fixture_dir": str(FIXTURE_DIR),
        }
    )
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}: jax ...", flush=True)
        jax_rates.append(run_jax())
        print(f"repeat {r + 1}/{args.repeats}: pytorch-fid ...", flush=True)
        res = subprocess.run(
            [args.torch_python, "-c", TORCH_CHILD, child_args],
            capture_output=True,
            text=True,
            check=True,
        )
        torch_info = json.loads(res.stdout.strip().splitlines()[-1])
        torch_rates += torch_info.pop("img_per_s")
    img_path.unlink()

    jax_med, torch_med = float(np.median(jax_rates)), float(np.median(torch_rates))
    result = {
        "what": "FID Inception feature extraction (resize to 299 + pool3), img/s, median",
        "num_images": args.num_images,
        "image_size": args.image_size,
        "batch": args.batch,
        "repeats": args.repeats,
        "jaxsynth_flax_img_per_s": jax_med,
        "pytorch_fid_img_per_s": torch_med,
        "ratio_flax_over_torch": jax_med / torch_med,
        "jax_runs": jax_rates,
        "torch_runs": torch_rates,
        "jax": jax_info,
        "torch": torch_info,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'implementation':<28}{'img/s (median)':>16}")
    print(f"{'jaxsynth (Flax, XLA:CPU)':<28}{jax_med:>16.2f}")
    print(f"{'pytorch-fid (torch eager)':<28}{torch_med:>16.2f}")
    print(f"ratio Flax / pytorch-fid: {jax_med / torch_med:.2f}  -> {args.out}")


if __name__ == "__main__":
    main()
