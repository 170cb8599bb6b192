"""The domain-shift arm on the phantom: how much tumour F1 drops when the test tiles come from
another stain protocol, and how much a CycleGAN recovers -- as stain NORMALISATION of the test
tiles (B -> A) or as stain AUGMENTATION of the training tiles (A -> B added to A).

    jaxsynth train --config configs/cyclegan.py --workdir runs/cyclegan
    python examples/i2i_domain_shift.py --cyclegan-run runs/cyclegan --out runs/domain_shift

Paper 000's CNN is trained on the run's training split (protocol A, rare tumour class, class
weights), the threshold chosen on protocol-A validation tiles (max F1), and tested on:
  A          the test split as rendered (no shift)
  B          the SAME test tissue under protocol B (the shift)
  B->A       those B tiles normalised by the CycleGAN's G_BA
and a second CNN trained on A plus G_AB(A) (stain augmentation) is tested on B. Each CNN is
trained with `--seeds` classifier seeds; tumour F1, AUPRC and ROC AUC get 95 % intervals from
the study's hierarchical bootstrap (classifier seed -> test image, paired across arms), and
each arm a Δ against its reference (B against A: the drop; the CycleGAN arms against B: the
recovery) with the study's verdict rule (the Δ interval excludes 0) and paper 004's paired
t-test over seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def _translate(task, state, images: np.ndarray, direction: str, batch: int = 100) -> np.ndarray:
    from jaxsynth.train.visuals import to_uint8

    fn = jax.jit(lambda x: task.translate(state, x.astype(jnp.float32) / 127.5 - 1.0, direction))
    return np.concatenate(
        [
            to_uint8(np.asarray(fn(jnp.asarray(images[i : i + batch]))))
            for i in range(0, len(images), batch)
        ]
    )


def main(argv=None) -> int:
    from jaxsynth.data.phantom import render_ids
    from jaxsynth.data.split import load_or_build_split
    from jaxsynth.eval.classification import choose_threshold
    from jaxsynth.study.verdicts import hierarchical_arms
    from jaxsynth.tasks.classify import fit_classifier, predict_proba
    from jaxsynth.train.checkpoint import load_trained

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cyclegan-run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--num-boot", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3, help="classifier seeds per arm")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    task, state, config, step = load_trained(args.cyclegan_run)
    split = load_or_build_split(config, args.cyclegan_run, progress=False)
    size, proto = int(config.image_size), config.cyclegan.b_protocol
    diff = float(config.data.phantom.difficulty)
    test_b, _ = render_ids(split.test.ids, size, proto, diff)
    tr, va, te = split.train, split.val, split.test
    sets = {"A": te.images, "B": test_b, "B->A (CycleGAN)": _translate(task, state, test_b, "ba")}

    def fit(images, labels, seed):
        w, _ = fit_classifier(
            images,
            labels,
            val_images=va.images,
            val_labels=va.labels,
            epochs=args.epochs,
            seed=seed,
        )
        return w, choose_threshold(va.labels, predict_proba(w, va.images))

    aug_name = "B, trained on A + A->B (CycleGAN augmentation)"
    aug = np.concatenate([tr.images, _translate(task, state, tr.images, "ab")])
    runs: dict[str, list[dict]] = {name: [] for name in [*sets, aug_name]}
    for seed in range(args.seeds):
        weights, thr = fit(tr.images, tr.labels, seed)
        for name, x in sets.items():
            runs[name].append(
                {"test_probs": predict_proba(weights, x), "threshold": thr, "seed": seed}
            )
        w_aug, thr_aug = fit(aug, np.concatenate([tr.labels, tr.labels]), seed)
        runs[aug_name].append(
            {"test_probs": predict_proba(w_aug, test_b), "threshold": thr_aug, "seed": seed}
        )
        print(f"classifier seed {seed}: done")

    y = te.labels.astype(int)
    refs = {"B": ["A"], "B->A (CycleGAN)": ["B"], aug_name: ["B"]}
    judged = hierarchical_arms(runs, y, n_boot=args.num_boot, seed=0, primary="f1", refs=refs)
    report = {
        "cyclegan_run": args.cyclegan_run,
        "cyclegan_step": int(step),
        "image_size": size,
        "classifier_seeds": args.seeds,
        "test_tiles": {"normal": int((y == 0).sum()), "tumour": int((y == 1).sum())},
        "threshold_from": "protocol-A validation tiles, max F1, per classifier seed",
        "intervals": "hierarchical bootstrap: classifier seed -> test image (paired across arms)",
        "arms": {},
    }
    for name, a in judged.items():
        m = a["metrics"]
        entry = {
            k: {"mean": m[k]["mean"], "ci95": m[k]["ci95"]} for k in ("f1", "pr_auc", "roc_auc")
        }
        for ref, comp in a["vs"].items():
            entry[f"vs_{ref}"] = {
                k: {
                    "delta": comp[k]["mean"],
                    "ci95": comp[k]["ci95"],
                    "verdict": comp[k]["verdict"],
                    "paired_t_p": comp[k]["t_test"]["p"],
                }
                for k in ("f1", "pr_auc", "roc_auc")
            }
        report["arms"][name] = entry
        line = (
            f"{name:48s} F1 {m['f1']['mean']:.3f} [{m['f1']['ci95'][0]:.3f}, "
            f"{m['f1']['ci95'][1]:.3f}]  AUPRC {m['pr_auc']['mean']:.3f}  "
            f"AUC {m['roc_auc']['mean']:.3f}"
        )
        for ref, comp in a["vs"].items():
            d = comp["f1"]
            line += f"  ΔF1 vs {ref} {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        print(line)
    (out / "domain_shift.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'domain_shift.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
