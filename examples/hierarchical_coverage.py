"""Coverage of the hierarchical bootstrap's 95 % interval on simulated studies.

Each simulated arm: G generator seeds × S classifier seeds × N test images, per-image loss
μ + a_g + b_gs + e_i + ε_gsi with known SDs; the arm metric is the mean loss, the truth μ = 0.
Prints a table of coverage (and the mean estimated / true variance components) per design and
writes it as JSON. How many generator seeds does an interval need to mean what it says?

    python examples/hierarchical_coverage.py [--studies 400] [--out runs/hb_coverage.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from jaxsynth.eval import hierarchical as hb

DESIGNS = [(1, 3), (3, 3), (5, 3), (8, 3), (10, 4)]
# (σ_gen, σ_cls, σ_image) scenarios: balanced, classifier/test-dominated, generator-dominated
SCENARIOS = [(0.02, 0.01, 0.1), (0.01, 0.02, 0.2), (0.03, 0.01, 0.05)]
SEPS, N, B = 0.05, 100, 400


def one_study(rng, G, S, sg, sc, se):
    a, b = rng.normal(0, sg, G), rng.normal(0, sc, (G, S))
    e, eps = rng.normal(0, se, N), rng.normal(0, SEPS, (G, S, N))
    loss = (a[:, None, None] + b[:, :, None] + e + eps).reshape(G * S, N)
    flat = (rng.integers(0, N, (B, N)) + N * np.arange(B)[:, None]).ravel()
    counts = np.bincount(flat, minlength=B * N).reshape(B, N).astype(np.float64)
    draws = (counts @ loss.T).T / N
    return hb.hierarchical_bootstrap(
        draws, loss.mean(1), np.repeat(np.arange(G), S), seed=int(rng.integers(1 << 30))
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=400)
    ap.add_argument("--out", default="runs/hb_coverage.json")
    args = ap.parse_args()
    rows = []
    print(
        f"{'G':>3} {'S':>3} {'σ_gen':>6} {'σ_cls':>6} {'σ_img':>6} {'coverage':>9} "
        f"{'σ²gen est/true':>15} {'σ²cls est/true':>15}"
    )
    for G, S in DESIGNS:
        for sg, sc, se in SCENARIOS:
            rng = np.random.default_rng(0)
            res = [one_study(rng, G, S, sg, sc, se) for _ in range(args.studies)]
            cov = np.mean([r["ci95"][0] <= 0 <= r["ci95"][1] for r in res])
            vg = np.nanmean([r["variance"]["components"]["generator"] for r in res]) / sg**2
            vc = np.nanmean([r["variance"]["components"]["classifier"] for r in res]) / (
                sc**2 + SEPS**2 / N
            )
            rows.append(
                {
                    "G": G,
                    "S": S,
                    "sigma_gen": sg,
                    "sigma_cls": sc,
                    "sigma_img": se,
                    "coverage": float(cov),
                    "var_gen_ratio": float(vg),
                    "var_cls_ratio": float(vc),
                    "studies": args.studies,
                }
            )
            print(f"{G:>3} {S:>3} {sg:>6} {sc:>6} {se:>6} {cov:>9.3f} {vg:>15.2f} {vc:>15.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
