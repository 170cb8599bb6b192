"""ViT feature extraction speed: jaxsynth's Flax ViT (loaded from the checkpoint without torch)
vs transformers' PyTorch `ViTModel`, same weights, same CPU, same run.

    flock /tmp/jaxsynth-heavy.lock .venv/bin/python bench/vit_bench.py \
        --torch-python /path/to/venv-with-torch-and-transformers/bin/python

The torch child builds a `ViTModel` (default: ViT-B/16 at 224 px, Phikon's architecture) with
seeded random weights and saves it with `save_pretrained` (safetensors); the JAX side reads that
folder through `VitExtractor` (hf layout). Both extract CLS features of the same uint8 tiles
(already 224 px: normalise + forward), in batches of `--batch`. Rounds alternate JAX / torch,
`--rounds` times, so load from other processes hits both alike. Prints a table and writes
bench/results/vit_bench.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

TORCH_CHILD = r"""
import json, sys, time
import numpy as np, torch, transformers
from transformers import ViTConfig, ViTModel
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
cfg = ViTConfig(hidden_size=a["dim"], num_hidden_layers=a["depth"], num_attention_heads=a["heads"],
                intermediate_size=4 * a["dim"], image_size=a["size"], patch_size=a["patch"])
torch.manual_seed(0)
model = ViTModel(cfg, add_pooling_layer=False).eval()
if a["save"]:
    model.save_pretrained(a["folder"], safe_serialization=True)
    print(json.dumps({"saved": a["folder"]})); sys.exit()
model = ViTModel.from_pretrained(a["folder"], add_pooling_layer=False).eval()
imgs = np.load(a["images"])
x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1); std = mean
b = a["batch"]
def run():
    outs = []
    with torch.inference_mode():
        for s in range(0, len(x), b):
            px = (x[s:s + b].float() / 255.0 - mean) / std
            outs.append(model(pixel_values=px).last_hidden_state[:, 0])
    return torch.cat(outs).numpy()
feats = run()  # warm-up
rates = []
for _ in range(a["repeats"]):
    t = time.perf_counter(); run(); rates.append(len(x) / (time.perf_counter() - t))
np.save(a["features_out"], feats)
print(json.dumps({"img_per_s": rates, "torch": torch.__version__,
                  "transformers": transformers.__version__, "threads": torch.get_num_threads()}))
"""


def _torch(args, extra: dict) -> dict:
    payload = {
        "dim": args.dim, "depth": args.depth, "heads": args.heads, "patch": args.patch,
        "size": args.size, "batch": args.batch, "threads": args.threads, **extra,
    }  # fmt: skip
    out = subprocess.run(
        [args.torch_python, "-c", TORCH_CHILD, json.dumps(payload)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        sys.exit(f"torch child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--torch-python", required=True, help="interpreter with torch + transformers")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "vit_bench.json"))
    args = p.parse_args()

    from jaxsynth.eval.extractors import VitExtractor

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "vit"
        _torch(args, {"save": True, "folder": str(folder)})
        # The torch child's model uses the HF processor's default mean/std of 0.5 too.
        (folder / "preprocessor_config.json").write_text(
            json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": args.size})
        )
        imgs = np.random.default_rng(0).integers(
            0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8
        )
        np.save(tmp / "imgs.npy", imgs)
        ext = VitExtractor(folder, "hf", pool="cls", batch_size=args.batch)
        t = time.perf_counter()
        f_jax = ext(imgs)  # includes compilation
        compile_s = time.perf_counter() - t
        jax_rates, torch_rates, meta = [], [], {}
        for _ in range(args.rounds):
            t = time.perf_counter()
            ext(imgs)
            jax_rates.append(len(imgs) / (time.perf_counter() - t))
            meta = _torch(
                args,
                {
                    "save": False,
                    "folder": str(folder),
                    "images": str(tmp / "imgs.npy"),
                    "repeats": 1,
                    "features_out": str(tmp / "torch_feats.npy"),
                },
            )
            torch_rates += meta["img_per_s"]
        f_torch = np.load(tmp / "torch_feats.npy")
    rel = float(np.abs(f_jax - f_torch).max() / np.abs(f_torch).max())
    import jax

    res = {
        "model": f"ViT dim {args.dim} depth {args.depth} heads {args.heads} "
        f"patch {args.patch} @ {args.size}px",
        "images": args.images,
        "batch": args.batch,
        "jax_img_per_s": jax_rates,
        "torch_img_per_s": torch_rates,
        "jax_median": float(np.median(jax_rates)),
        "torch_median": float(np.median(torch_rates)),
        "jax_first_call_s": compile_s,
        "max_rel_feature_diff": rel,
        "versions": {"jax": jax.__version__, "python": platform.python_version(), **meta},
    }
    print(f"{'':10s} {'img/s (median)':>15s}  rounds")
    print(f"{'jax':10s} {res['jax_median']:15.2f}  {[round(r, 2) for r in jax_rates]}")
    print(f"{'torch':10s} {res['torch_median']:15.2f}  {[round(r, 2) for r in torch_rates]}")
    print(
        f"ratio jax/torch {res['jax_median'] / res['torch_median']:.2f}; "
        f"features rel diff {rel:.2e}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
