"""Does each class of a conditional generator look like its class? Per-class FID and a
real-trained classifier's verdict.

WHY: a class-conditional model (cGAN, class-conditional DDPM) or a set of per-class models can
reach a good pooled FID while drawing the same tissue for every label. Issue 4 asks that the
samples *of each class look like their class*; the measurable form used here:

* FID of the class-c samples vs the held-out real tiles of class c, and vs every other class
  (a class-c sample set should be nearer its own class);
* Rane 2026's CNN trained on the REAL training split only: the mean P(minority) it gives each
  sample set next to what it gives the real held-out tiles of that class, and the ROC AUC with
  which it separates the two sampled classes (0.5 = the labels change nothing; the same CNN on
  the real held-out tiles gives the ceiling).

Features are that CNN's ("domain") unless the user gives pytorch-fid's Inception weights.
"""

from __future__ import annotations

import numpy as np

from jaxsynth.data.split import StudySplit
from jaxsynth.eval import fid
from jaxsynth.eval.classification import roc_auc
from jaxsynth.eval.memorization import memorization_report


class ClassFidelity:
    """The reference every per-class sample set is scored against: the held-out real tiles of
    each class (val + test of `split`) and their features, and a classifier trained on the real
    training split (Rane 2026's CNN; `jaxsynth.tasks.domain.class_fidelity` trains it and builds
    this). Build once, `score` many sample sets (guidance scales, models).

    `p_minority(images)` is that classifier's P(minority) per image (uint8 or [-1, 1] floats);
    `extractor` the feature extractor (its `id` names the space). Taken as arguments so this
    metric does not depend on how, or with which trainer, the classifier was made.
    """

    def __init__(self, split: StudySplit, *, p_minority, extractor, minority: str = "tumour"):
        self.names = tuple(split.class_names)
        self.minority = split.label_of(minority)
        self.p_minority = p_minority
        self.extractor = extractor
        self.real_of = {
            c: np.concatenate([split.val.of_classes([c]).images, split.test.of_classes([c]).images])
            for c in range(len(self.names))
        }
        self.feats_of = {c: self.extractor(x) for c, x in self.real_of.items()}
        self.train_of = {c: split.train.of_classes([c]).images for c in range(len(self.names))}
        self.train_feats_of = {c: self.extractor(x) for c, x in self.train_of.items()}
        # what the CNN says of the real held-out tiles is fixed: computed once, not per score()
        self.p_real_of = {c: self.p_minority(x) for c, x in self.real_of.items()}
        if len(self.names) == 2:
            other = 1 - self.minority
            self.auc_on_real = self._auc(self.p_real_of[other], self.p_real_of[self.minority])

    def score(self, samples: dict[str, np.ndarray]) -> dict:
        """`samples` maps every class name to that class's generated images (uint8, or floats
        in [-1, 1] as the samplers return them). Returns
        {"features", "per_class": {name: {fid, fid_vs_other_classes, num_fake, num_real,
        real_classifier_p_minority, real_classifier_p_minority_on_real, memorized_fraction,
        median_train_heldout_ratio}},
        "real_classifier_auc_on_samples" (two classes), "real_classifier_auc_on_real"}."""
        missing = [n for n in self.names if n not in samples]
        if missing:
            raise ValueError(f"samples for classes {missing} are missing (have {list(samples)})")
        result = {"features": self.extractor.id, "per_class": {}}
        p_fake = {}
        for label, name in enumerate(self.names):
            fake = _as_uint8(samples[name])
            f_fake = self.extractor(fake)
            p_fake[name] = self.p_minority(fake)
            result["per_class"][name] = {
                "fid": fid.fid_from_features(self.feats_of[label], f_fake),
                "fid_vs_other_classes": {
                    self.names[o]: fid.fid_from_features(self.feats_of[o], f_fake)
                    for o in range(len(self.names))
                    if o != label
                },
                "num_fake": len(fake),
                "num_real": len(self.real_of[label]),
                "real_classifier_p_minority": float(p_fake[name].mean()),
                "real_classifier_p_minority_on_real": float(self.p_real_of[label].mean()),
                **self._memorization(label, fake, f_fake),
            }
        if len(self.names) == 2:
            other = 1 - self.minority
            result["real_classifier_auc_on_samples"] = self._auc(
                p_fake[self.names[other]], p_fake[self.names[self.minority]]
            )
            result["real_classifier_auc_on_real"] = self.auc_on_real
        return result

    def _memorization(self, label: int, fake: np.ndarray, f_fake: np.ndarray) -> dict:
        """Fraction of samples flagged as copies of this class's training tiles (feature or
        pixel space), and the median ratio of a sample's pixel distance to its nearest training
        tile over that to its nearest held-out tile (~1 for new images, << 1 for copies)."""
        if len(self.train_of[label]) == 0:
            return {}
        report = memorization_report(
            f_fake,
            self.train_feats_of[label],
            self.feats_of[label],
            fake,
            self.train_of[label],
            self.real_of[label],
        )
        ratio = report["spaces"]["pixel"]["train_heldout_ratio"]
        return {
            "memorized_fraction": report["flagged_fraction"],
            "median_train_heldout_ratio": float(np.median(ratio)),
        }

    @staticmethod
    def _auc(p_negatives: np.ndarray, p_positives: np.ndarray) -> float:
        """ROC AUC of the CNN's P(minority) separating two image sets."""
        y = np.r_[np.zeros(len(p_negatives)), np.ones(len(p_positives))]
        return roc_auc(y, np.concatenate([p_negatives, p_positives]))


def _as_uint8(images: np.ndarray) -> np.ndarray:
    """Samplers return floats in [-1, 1]; the real tiles (and the pixel-space memorisation
    check) are uint8."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    from jaxsynth.images import to_uint8

    return to_uint8(images)
