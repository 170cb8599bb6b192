"""Memorisation check: planted copies are flagged, genuinely new images pass."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jaxsynth.eval import memorization as mem
from jaxsynth.eval.features import PixelExtractor

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "fid"))
import seeded_weights  # noqa: E402


def test_planted_copies_flagged_new_images_pass(tmp_path):
    train = seeded_weights.images(16, 60, seed=10)
    heldout = seeded_weights.images(16, 60, seed=11)
    fresh = seeded_weights.images(16, 20, seed=12)  # same distribution, never seen
    rng = np.random.default_rng(0)
    exact = train[[3, 17]]
    near = np.clip(train[[5, 40, 41]] + rng.normal(0, 2.0, (3, 16, 16, 3)), 0, 255).astype(np.uint8)
    fake = np.concatenate([fresh, exact, near])
    extract = PixelExtractor(8)
    rep = mem.memorization_report(
        extract(fake), extract(train), extract(heldout), fake, train, heldout, percentile=1.0
    )
    flagged = rep["flagged"]
    assert flagged[20:].all(), "every exact / near copy must be flagged"
    assert flagged[:20].sum() <= 1, "new images from the same distribution pass (~1 % may not)"
    assert rep["flagged_fraction"] == flagged.mean()
    # The nearest training image of each copy is its source.
    np.testing.assert_array_equal(rep["spaces"]["pixel"]["nearest_train"][20:], [3, 17, 5, 40, 41])
    d_ref, _ = mem.nearest(heldout.reshape(60, -1) / 255.0, train.reshape(60, -1) / 255.0)
    assert rep["spaces"]["pixel"]["threshold"] == np.percentile(d_ref, 1.0)
    kept = mem.filter_memorized(rep)
    assert set(kept) == set(np.flatnonzero(~flagged)) and not set(kept) & set(range(20, 25))
    png = mem.closest_pairs_grid(fake, train, rep, tmp_path / "pairs.png", num_pairs=4)
    grid = np.asarray(Image.open(png))
    assert grid.shape == (2 * 24, 4 * 24, 3)
    # The closest pairs shown are the exact copies (distance 0): identical top and bottom tiles.
    np.testing.assert_array_equal(grid[4:20, 4:20], grid[28:44, 4:20])


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(1)
    q, r = rng.standard_normal((7, 5)), rng.standard_normal((11, 5))
    d, i = mem.nearest(q, r, chunk=3)
    full = np.linalg.norm(q[:, None] - r[None], axis=-1)
    np.testing.assert_array_equal(i, full.argmin(1))
    np.testing.assert_allclose(d, full.min(1), rtol=1e-12)


def test_average_looking_images_are_not_called_copies():
    """A mode-collapsed generator's blurry 'mean' tile is near every real image — training and
    held-out alike — and passes the distance threshold; it copies nothing and must not be
    flagged (the train/held-out distance ratio tells them apart). A real copy still is."""
    rng = np.random.default_rng(3)
    base = rng.uniform(60, 200, (1, 16, 16, 3))
    # Texture-rich tiles: independent detail around a shared layout. In high dimension the
    # shared mean is closer to every tile (sigma*sqrt(D)) than tiles are to each other
    # (sqrt(2)*sigma*sqrt(D)).
    train = np.clip(base + rng.normal(0, 25, (60, 16, 16, 3)), 0, 255).astype(np.uint8)
    heldout = np.clip(base + rng.normal(0, 25, (60, 16, 16, 3)), 0, 255).astype(np.uint8)
    collapsed = np.repeat(np.rint(base).astype(np.uint8), 5, axis=0)
    fake = np.concatenate([collapsed, train[[7]]])
    extract = PixelExtractor(16)
    rep = mem.memorization_report(
        extract(fake), extract(train), extract(heldout), fake, train, heldout
    )
    s = rep["spaces"]["pixel"]
    assert (s["distance"][:5] < s["threshold"]).all(), "the mean tile is within the threshold"
    assert not rep["flagged"][:5].any()
    assert rep["flagged"][5]
