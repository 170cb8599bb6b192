"""What the paired-truth scores are WITHOUT any model: protocol A tiles scored against their own
protocol-B twins (the "no translation" baseline a stain-translation model must beat), and the
re-segmentation IoU of real tiles against their exact masks (the ceiling the segmenter allows a
mask -> tile model). No training; seconds.

    python examples/i2i_stain_baseline.py --sizes 32,64 --num 200
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main(argv=None) -> int:
    from jaxsynth.data.phantom import render_pairs
    from jaxsynth.diffusion.segmentation import mask_guided_iou
    from jaxsynth.eval.image_metrics import psnr, ssim
    from jaxsynth.eval.stain_metrics import stain_distance

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="32,64")
    p.add_argument("--num", type=int, default=200, help="tiles (balanced normal / tumour)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-index", type=int, default=10000, help="phantom indices used")
    args = p.parse_args(argv)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        idx = range(args.first_index, args.first_index + args.num)
        pairs = render_pairs(seed=args.seed, indices=idx, image_size=size)
        seg = mask_guided_iou(pairs["a"], pairs["mask"])
        row = {
            "size": size,
            "num": args.num,
            "ssim_a_vs_b": float(np.mean(ssim(pairs["a"], pairs["b"]))),
            "psnr_a_vs_b_db": float(np.mean(psnr(pairs["a"], pairs["b"]))),
            **stain_distance(pairs["a"], pairs["b"]),
            "segmenter_iou_real": seg["iou"],
            "segmenter_iou_shuffled": seg["iou_shuffled"],
        }
        rows.append(row)
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
