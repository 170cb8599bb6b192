"""Control arms (classical augmentation, oversampling) and the selective filter."""

import ml_collections
import numpy as np
import pytest

from jaxsynth.data.split import LeakageError, build_study_split
from jaxsynth.data.types import Record
from jaxsynth.study import arms as arms_lib
from jaxsynth.study import controls, selective

COUNTS = {
    "test": {"normal": 10, "tumour": 5},
    "val": {"normal": 6, "tumour": 6},
    "train": {"normal": 20, "tumour": 7},
}


class _Source:
    """Pinkish tiles (H&E-like colours); tumour tiles darker. Pixels encode the index."""

    name = "toy"
    class_names = ("normal", "tumour")
    has_masks = False

    def __init__(self, n_normal=40, n_tumour=25):
        self.labels = [0] * n_normal + [1] * n_tumour

    def __len__(self):
        return len(self.labels)

    def label_of(self, i):
        return self.labels[i]

    def id_of(self, i):
        return f"toy/{i}"

    def load(self, i):
        rng = np.random.default_rng(i)
        base = np.array([200, 120, 170]) - 60 * self.labels[i]
        img = np.clip(base + rng.normal(0, 25, (8, 8, 3)), 0, 255).astype(np.uint8)
        return Record(image=img, label=self.labels[i], id=self.id_of(i), mask=None)


@pytest.fixture(scope="module")
def split():
    return build_study_split(_Source(), seed=0, image_size=8, counts=COUNTS)


def _cfg():
    return ml_collections.ConfigDict(
        dict(
            hed_sigma=0.05,
            hed_bias=0.01,
            brightness=0.05,
            contrast=0.1,
            blur_prob=0.5,
            blur_sigma=1.0,
        )
    )


def _hashes(images):
    return {im.tobytes() for im in images}


def test_controls_match_the_synthetic_arms_count_and_use_only_training_tiles(split):
    synthetic = np.random.default_rng(5).integers(0, 256, (17, 8, 8, 3), dtype=np.uint8)
    gen_arm = arms_lib.augmented_arm(split, "dcgan", synthetic, 1, synthetic_only=False)
    rng = np.random.default_rng(0)
    cl = controls.classical_arm(split, "dcgan", 17, 1, rng, _cfg())
    ov = controls.oversample_arm(split, "dcgan", 17, 1, rng)
    for arm in (cl, ov):
        assert arm.counts == gen_arm.counts  # same real, added, minority and total counts
    assert (cl.name, ov.name) == ("dcgan_classical", "dcgan_oversample")
    train_tumour = split.train.of_classes([1]).images
    held = np.concatenate([split.val.images, split.test.images])
    added = ov.images[ov.is_synthetic]
    assert _hashes(added) <= _hashes(train_tumour)  # duplicates of training tumour tiles only
    # 17 from 7 tiles round-robin: each used 2 or 3 times
    uses = [sum(a.tobytes() == t.tobytes() for a in added) for t in train_tumour]
    assert sorted(set(uses)) == [2, 3]
    # every classical tile is one of the 8 dihedral transforms of a training tumour tile,
    # recoloured a little (checked against the nearest one; never a held-out tile)
    aug = cl.images[cl.is_synthetic].astype(float)
    dihedrals = np.stack([controls.dihedral(t, k) for t in train_tumour for k in range(8)])
    d_train = np.abs(aug[:, None] - dihedrals[None].astype(float)).mean((2, 3, 4)).min(1)
    d_held = np.abs(aug[:, None] - held[None].astype(float)).mean((2, 3, 4)).min(1)
    assert (d_train < d_held).all()
    assert not (_hashes(cl.images) & _hashes(held))


def test_dihedral_and_hed_jitter():
    t = np.arange(3 * 3 * 3, dtype=np.uint8).reshape(3, 3, 3)
    forms = {controls.dihedral(t, k).tobytes() for k in range(8)}
    assert len(forms) == 8  # the 8 symmetries of the square, all distinct on a generic tile
    np.testing.assert_array_equal(controls.dihedral(t, 0), t)
    np.testing.assert_array_equal(controls.dihedral(t, 5), np.rot90(t)[:, ::-1])
    img = np.random.default_rng(0).integers(30, 230, (3, 6, 6, 3), dtype=np.uint8)
    same = controls.hed_jitter(img, np.ones((3, 3)), np.zeros((3, 3)))
    np.testing.assert_array_equal(same, img)  # identity jitter changes nothing
    darker = controls.hed_jitter(img, np.full((3, 3), 1.3), np.zeros((3, 3)))
    assert darker.mean() < img.mean()  # more stain absorbs more light


def _classifier_fns():
    # "P(tumour)" = darkness; features = mean colour
    prob = lambda x: 1 - x.reshape(len(x), -1).mean(1) / 255.0  # noqa: E731
    feat = lambda x: x.reshape(len(x), -1, 3).mean(1)  # noqa: E731
    return prob, feat


def test_selective_filter_keeps_convincing_tiles_with_validation_thresholds(split):
    prob, feat = _classifier_fns()
    tumour_like = split.train.of_classes([1]).images[:4].astype(int) + 3
    normal_like = split.train.of_classes([0]).images[:4].astype(int) + 3
    syn = np.clip(np.concatenate([tumour_like, normal_like]), 0, 255).astype(np.uint8)
    val_t = split.val.of_classes([1]).images
    r = selective.select_synthetic(
        syn, val_t, split.train.of_classes([1]).images, prob, feat, split.manifest, 0.1, 0.9
    )
    assert set(r["keep"]) <= {0, 1, 2, 3} and len(r["keep"]) >= 2
    assert r["confidence_threshold"] == pytest.approx(np.quantile(prob(val_t), 0.1))


def test_selective_filter_refuses_a_planted_test_tile(split):
    prob, feat = _classifier_fns()
    val_t = split.val.of_classes([1]).images
    train_t = split.train.of_classes([1]).images
    test_tile = split.test.images[:1]
    syn = train_t[:3].copy()
    syn[0, 0, 0, 0] ^= 1
    args = (prob, feat, split.manifest, 0.1, 0.9)
    with pytest.raises(LeakageError, match="threshold tiles"):
        selective.select_synthetic(syn, np.concatenate([val_t, test_tile]), train_t, *args)
    with pytest.raises(LeakageError, match="synthetic tiles"):
        selective.select_synthetic(np.concatenate([syn, test_tile]), val_t, train_t, *args)
    with pytest.raises(LeakageError, match="centroid tiles"):
        selective.select_synthetic(syn, val_t, np.concatenate([train_t, val_t[:1]]), *args)
