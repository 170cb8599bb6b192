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
and a second CNN trained on A plus G_AB(A) (stain augmentation) is tested on B. Tumour F1 and
ROC AUC with stratified percentile-bootstrap 95% CIs; the gains are paired bootstrap differences
on the same resamples (the CI of "arm minus B" excludes 0 = a real recovery).
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


def _scores(y, probs, thr, idx) -> dict:
    from jaxsynth.eval.classification import binary_metrics

    f1 = np.array([binary_metrics(y[i], probs[i], thr)["f1"] for i in idx])
    auc = np.array([binary_metrics(y[i], probs[i], thr)["roc_auc"] for i in idx])
    full = binary_metrics(y, probs, thr)
    return {"f1": full["f1"], "roc_auc": full["roc_auc"], "_f1": f1, "_auc": auc}


def _ci(v: np.ndarray) -> list[float]:
    return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]


def main(argv=None) -> int:
    from jaxsynth.data.phantom import render_ids
    from jaxsynth.data.split import load_or_build_split
    from jaxsynth.eval.classification import choose_threshold, resample_indices
    from jaxsynth.tasks.classify import fit_classifier, predict_proba
    from jaxsynth.train.checkpoint import load_trained

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cyclegan-run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--num-boot", type=int, default=1000)
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

    def fit(images, labels):
        w, _ = fit_classifier(
            images, labels, val_images=va.images, val_labels=va.labels, epochs=args.epochs
        )
        return w, choose_threshold(va.labels, predict_proba(w, va.images))

    weights, thr = fit(tr.images, tr.labels)
    probs = {name: predict_proba(weights, x) for name, x in sets.items()}
    aug = np.concatenate([tr.images, _translate(task, state, tr.images, "ab")])
    w_aug, thr_aug = fit(aug, np.concatenate([tr.labels, tr.labels]))

    y = te.labels.astype(int)
    idx = resample_indices(y, args.num_boot, seed=0)
    arms = {name: _scores(y, pr, thr, idx) for name, pr in probs.items()}
    arms["B, trained on A + A->B (CycleGAN augmentation)"] = _scores(
        y, predict_proba(w_aug, test_b), thr_aug, idx
    )
    report = {
        "cyclegan_run": args.cyclegan_run,
        "cyclegan_step": int(step),
        "image_size": size,
        "test_tiles": {"normal": int((y == 0).sum()), "tumour": int((y == 1).sum())},
        "threshold_from": "protocol-A validation tiles, max F1",
        "arms": {},
    }
    for name, r in arms.items():
        entry = {
            "tumour_f1": r["f1"],
            "tumour_f1_ci95": _ci(r["_f1"]),
            "roc_auc": r["roc_auc"],
            "roc_auc_ci95": _ci(r["_auc"]),
        }
        if name != "B" and name != "A":
            entry["f1_gain_vs_B"] = r["f1"] - arms["B"]["f1"]
            entry["f1_gain_vs_B_ci95"] = _ci(r["_f1"] - arms["B"]["_f1"])
        if name == "B":
            entry["f1_drop_vs_A"] = arms["A"]["f1"] - r["f1"]
            entry["f1_drop_vs_A_ci95"] = _ci(arms["A"]["_f1"] - r["_f1"])
        report["arms"][name] = entry
        print(
            f"{name:48s} F1 {r['f1']:.3f} [{entry['tumour_f1_ci95'][0]:.3f}, "
            f"{entry['tumour_f1_ci95'][1]:.3f}]  AUC {r['roc_auc']:.3f}"
        )
    (out / "domain_shift.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'domain_shift.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
