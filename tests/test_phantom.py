"""The simulated H&E phantom: determinism, shapes, and MEASURED class differences.

The class differences (bigger nuclei, more nuclear area, darker nuclei in tumour tiles) are
measured from the rendered pixels and masks with scikit-image, not read back from the
generator's parameters, so a rendering bug that lost a feature would fail here.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from skimage.color import rgb2hed
from skimage.measure import label, regionprops

from jaxsynth.data.phantom import (
    DEFAULT_DIFFICULTY,
    PhantomSource,
    render_tile,
    tile_seed,
)
from jaxsynth.data.types import ImageSource, Record


def _tiles(label_: int, n: int, size: int, difficulty: float, offset: int = 0):
    return [render_tile(1000 + offset + i, label_, size, difficulty) for i in range(n)]


def _mean_nucleus_area(mask: np.ndarray) -> float:
    areas = [r.area for r in regionprops(label(mask, connectivity=1))]
    return float(np.mean(areas)) if areas else 0.0


def _haematoxylin(image: np.ndarray) -> np.ndarray:
    return rgb2hed(image)[..., 0]


def test_deterministic_in_arguments():
    a_img, a_mask = render_tile(7, 1, 48, 0.3)
    b_img, b_mask = render_tile(7, 1, 48, 0.3)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    c_img, _ = render_tile(8, 1, 48, 0.3)
    d_img, _ = render_tile(7, 0, 48, 0.3)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_img, d_img)


@pytest.mark.parametrize("size", [16, 17, 31, 64, 100, 256])
def test_any_size_gives_rgb_uint8_and_binary_mask(size):
    image, mask = render_tile(3, 1, size, DEFAULT_DIFFICULTY)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert mask.shape == (size, size) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    assert 0 < mask.mean() < 0.9  # some nuclei, not all nucleus
    assert image.std() > 5  # structure, not a flat colour


@pytest.mark.parametrize(
    "bad",
    [
        dict(image_size=15),
        dict(image_size=257),
        dict(label=2),
        dict(difficulty=1.5),
        dict(difficulty=-0.1),
    ],
)
def test_bad_arguments_raise(bad):
    args = dict(seed=0, label=0, image_size=32, difficulty=0.5) | bad
    with pytest.raises(ValueError):
        render_tile(**args)


def test_same_seed_same_tissue_at_two_sizes():
    """Fixed field of view: the 32-px tile is the 64-px tile at half resolution."""
    big, _ = render_tile(11, 1, 64, 0.5)
    small, _ = render_tile(11, 1, 32, 0.5)
    down = big.astype(float).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    other, _ = render_tile(12, 1, 32, 0.5)
    same_err = np.abs(down - small).mean()
    other_err = np.abs(down - other.astype(float)).mean()
    assert same_err < 6.0  # pixel noise and 8-bit rounding only
    assert other_err > 3 * same_err


def test_mask_marks_haematoxylin_rich_pixels():
    """Inside the mask the haematoxylin OD (skimage's colour deconvolution) is higher."""
    inside, outside = [], []
    for image, mask in _tiles(0, 6, 64, 0.5) + _tiles(1, 6, 64, 0.5):
        h = _haematoxylin(image)
        inside.append(h[mask == 1].mean())
        outside.append(h[mask == 0].mean())
    assert np.all(np.array(inside) > np.array(outside))
    assert np.mean(inside) > np.mean(outside) + 0.03


def test_colours_look_like_h_and_e():
    """Nuclei purple-blue (blue > red inside the mask), eosin areas pink (red > green)."""
    image, mask = render_tile(5, 0, 64, 0.5)
    rgb = image.astype(float)
    nuc = rgb[mask == 1].mean(axis=0)
    rest = rgb[mask == 0].mean(axis=0)
    assert nuc[2] > nuc[0]  # haematoxylin: blue-purple
    assert rest[0] > rest[1] + 20  # eosin: pink (red well above green)
    assert rest.mean() > nuc.mean() + 30  # nuclei darker than their surroundings


def test_tumour_features_measured_at_difficulty_zero():
    normal = _tiles(0, 24, 64, 0.0)
    tumour = _tiles(1, 24, 64, 0.0)
    area_n = np.mean([_mean_nucleus_area(m) for _, m in normal])
    area_t = np.mean([_mean_nucleus_area(m) for _, m in tumour])
    assert area_t >= 1.4 * area_n  # enlarged nuclei
    frac_n = np.mean([m.mean() for _, m in normal])
    frac_t = np.mean([m.mean() for _, m in tumour])
    assert frac_t > 1.5 * frac_n  # crowded, high nucleus-to-cytoplasm ratio
    dark_n = np.mean([_haematoxylin(i)[m == 1].mean() for i, m in normal])
    dark_t = np.mean([_haematoxylin(i)[m == 1].mean() for i, m in tumour])
    assert dark_t > dark_n + 0.02  # hyperchromatic


def test_tumour_nuclei_are_pleomorphic_at_difficulty_zero():
    """Spread of nucleus size and shape irregularity (1 - solidity) is larger in tumour tiles."""

    def spread_and_irregularity(tiles):
        cvs, irr = [], []
        for _, m in tiles:
            props = [p for p in regionprops(label(m, connectivity=1)) if p.area >= 6]
            areas = np.array([p.area for p in props], float)
            cvs.append(areas.std() / areas.mean())
            irr.append(np.mean([1 - p.solidity for p in props]))
        return np.mean(cvs), np.mean(irr)

    cv_n, irr_n = spread_and_irregularity(_tiles(0, 16, 128, 0.0))
    cv_t, irr_t = spread_and_irregularity(_tiles(1, 16, 128, 0.0))
    assert cv_t > cv_n and irr_t > irr_n


def _per_tile_area(label_: int, difficulty: float, n: int = 60) -> np.ndarray:
    return np.array([_mean_nucleus_area(m) for _, m in _tiles(label_, n, 32, difficulty, 500)])


def test_difficulty_one_makes_classes_indistinguishable():
    normal = _per_tile_area(0, 1.0)
    tumour = _per_tile_area(1, 1.0)
    assert stats.ks_2samp(normal, tumour).pvalue > 0.05
    # ... while the same test, same sample size, clearly separates them at difficulty 0.
    assert stats.ks_2samp(_per_tile_area(0, 0.0), _per_tile_area(1, 0.0)).pvalue < 1e-6


def test_difficulty_one_gives_identical_feature_distributions_by_h_and_nuclear_fraction():
    def feats(label_):
        out = []
        for image, mask in _tiles(label_, 60, 32, 1.0, 2000):
            out.append((mask.mean(), _haematoxylin(image)[mask == 1].mean()))
        return np.array(out)

    n, t = feats(0), feats(1)
    for k in range(2):
        assert stats.ks_2samp(n[:, k], t[:, k]).pvalue > 0.05


def test_source_implements_protocol():
    src = PhantomSource(num_per_class=3, image_size=24, difficulty=0.4, seed=9)
    assert isinstance(src, ImageSource)
    assert src.name == "phantom" and src.class_names == ("normal", "tumour") and src.has_masks
    assert len(src) == 6
    assert [src.label_of(i) for i in range(6)] == [0, 1, 0, 1, 0, 1]
    assert src.id_of(5) == "phantom/9/5"
    assert len({src.id_of(i) for i in range(6)}) == 6
    rec = src.load(5)
    assert isinstance(rec, Record) and rec.label == 1 and rec.id == "phantom/9/5"
    image, mask = render_tile(tile_seed(9, 5), 1, 24, 0.4)
    np.testing.assert_array_equal(rec.image, image)
    np.testing.assert_array_equal(rec.mask, mask)
    images, masks, labels = src.render_batch([5, 2])
    np.testing.assert_array_equal(images[0], rec.image)
    np.testing.assert_array_equal(masks[1], src.load(2).mask)
    assert labels.tolist() == [1, 0]
    with pytest.raises(IndexError):
        src.load(6)
    # another source seed gives other tiles
    assert not np.array_equal(PhantomSource(3, 24, 0.4, seed=10).load(5).image, rec.image)
