"""Study split: test carved first, disjoint, deterministic, corrupt tiles skipped, leakage guard."""

import numpy as np
import pytest

from jaxsynth.data.split import (
    LeakageError,
    assert_no_leakage,
    build_study_split,
    load_split,
    pixel_hash,
    save_split,
)
from jaxsynth.data.types import CorruptImage, ImageSource, Record, SkipReport
from jaxsynth.errors import UserError


class ToySource:
    """Tiles whose pixels encode their index; some indices are corrupt."""

    name = "toy"
    class_names = ("normal", "tumour")
    has_masks = True

    def __init__(self, n_normal=60, n_tumour=20, corrupt=(), size=12):
        self.labels = [0] * n_normal + [1] * n_tumour
        self.corrupt = set(corrupt)
        self.size = size

    def __len__(self):
        return len(self.labels)

    def label_of(self, i):
        return self.labels[i]

    def id_of(self, i):
        return f"toy/{i}"

    def load(self, i):
        if i in self.corrupt:
            raise CorruptImage("truncated file")
        rng = np.random.default_rng(i)
        img = rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)
        return Record(image=img, label=self.labels[i], id=self.id_of(i), mask=img[..., 0] > 128)


COUNTS = {
    "test": {"normal": 10, "tumour": 5},
    "val": {"normal": 5, "tumour": 3},
    "train": {"normal": 30, "tumour": 8},
}


def test_counts_disjoint_and_real_only():
    src = ToySource()
    assert isinstance(src, ImageSource)
    s = build_study_split(src, seed=0, image_size=8, counts=COUNTS)
    for name, want in COUNTS.items():
        part = s.split(name)
        assert np.bincount(part.labels, minlength=2).tolist() == [want["normal"], want["tumour"]]
        assert part.images.shape[1:] == (8, 8, 3) and part.masks.shape[1:] == (8, 8)
        assert [pixel_hash(x) for x in part.images] == part.hashes
    ids = [set(s.split(n).ids) for n in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert s.manifest["order"] == ["test", "val", "train"]


def test_test_split_does_not_depend_on_train_counts():
    """Carving the test split first: asking for more training data never changes the test set."""
    src = ToySource()
    a = build_study_split(src, seed=4, image_size=8, counts=COUNTS)
    more = {**COUNTS, "train": {"normal": 40, "tumour": 12}}
    b = build_study_split(src, seed=4, image_size=8, counts=more)
    assert a.test.ids == b.test.ids and a.val.ids == b.val.ids
    c = build_study_split(src, seed=5, image_size=8, counts=COUNTS)
    assert c.test.ids != a.test.ids


def test_corrupt_tiles_are_skipped_counted_and_replaced():
    src = ToySource(n_tumour=24, corrupt=range(60, 66))  # six tumour tiles unreadable
    report = SkipReport()
    s = build_study_split(src, seed=0, image_size=8, counts=COUNTS, report=report)
    skipped = {item for item, _ in report.skipped}
    assert skipped <= {f"toy/{i}" for i in range(60, 66)}
    # exactly the requested number taken, replacements included
    assert sum(len(s.split(n)) for n in ("train", "val", "test")) == 61
    assert all(reason == "truncated file" for _, reason in report.skipped)
    assert not skipped & set(s.train.ids + s.val.ids + s.test.ids)


def test_running_out_is_a_one_line_error():
    with pytest.raises(UserError, match=r"data.split.train.tumour: asked for 8 images"):
        build_study_split(ToySource(n_tumour=12), seed=0, image_size=8, counts=COUNTS)
    with pytest.raises(UserError, match=r"data.split.test.benign: no class 'benign'"):
        build_study_split(
            ToySource(), seed=0, image_size=8, counts={**COUNTS, "test": {"benign": 1}}
        )


def test_leakage_guard_catches_a_planted_test_image():
    s = build_study_split(ToySource(), seed=0, image_size=8, counts=COUNTS)
    gen_train = s.train.of_classes([1]).images
    assert_no_leakage(s, gen_train, "dcgan")  # clean: passes
    planted = np.concatenate([gen_train, s.test.images[3:4]])
    with pytest.raises(LeakageError, match=s.test.ids[3]):
        assert_no_leakage(s, planted, "dcgan")
    with pytest.raises(LeakageError, match=r"\(val\)"):
        assert_no_leakage(s.manifest, np.concatenate([gen_train, s.val.images[:1]]), "ddpm")


def test_save_load_roundtrip_and_tamper_detection(tmp_path):
    s = build_study_split(ToySource(), seed=0, image_size=8, counts=COUNTS)
    save_split(s, tmp_path / "split")
    r = load_split(tmp_path / "split")
    for n in ("train", "val", "test"):
        np.testing.assert_array_equal(r.split(n).images, s.split(n).images)
        np.testing.assert_array_equal(r.split(n).masks, s.split(n).masks)
        assert r.split(n).ids == s.split(n).ids
    z = dict(np.load(tmp_path / "split" / "arrays.npz"))
    z["test_images"][0, 0, 0, 0] ^= 1
    np.savez(tmp_path / "split" / "arrays.npz", **z)
    with pytest.raises(UserError, match="does not match its manifest hash"):
        load_split(tmp_path / "split")
