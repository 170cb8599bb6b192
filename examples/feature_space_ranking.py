"""Which feature space sees a missing tissue component? (docs/feature_spaces.md)

    flock /tmp/jaxsynth-heavy.lock python examples/feature_space_ranking.py --out runs/fs_rank.json

Trains the SimCLR encoder (configs/ssl_encoder.py:phantom) and the domain CNN on phantom
TRAINING tiles, then prints FD from a real reference set to: other real tiles, tiles rendered
without stroma fibres, and noise, in each space (and each as a fraction of the noise FD).
"""

import argparse
import json
import time
from pathlib import Path

from jaxsynth.study.feature_spaces import missing_component_check


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/feature_space_ranking.json")
    p.add_argument("--cache", default="runs/feature_space_cache")
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--ssl-config", default="phantom")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    t0 = time.time()
    res = missing_component_check(
        n_train=a.n_train,
        n_eval=a.n_eval,
        image_size=a.image_size,
        ssl_config=a.ssl_config,
        cache_root=a.cache,
        seed=a.seed,
    )
    print(f"\n{'space':8s} {'real':>10s} {'no_fibres':>10s} {'noise':>10s}  no_fibres/real  /noise")
    for name, r in res.items():
        print(
            f"{name:8s} {r['real']:10.4g} {r['no_fibres']:10.4g} {r['noise']:10.4g}"
            f"  {r['no_fibres'] / r['real']:14.2f}  {r['no_fibres'] / r['noise']:6.3f}"
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"args": vars(a), "fd": res, "seconds": time.time() - t0}))
    print(f"wrote {a.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
