"""Paired-truth phantom (stain protocols A and B), the image pool, the unpaired packing, and the
`jaxsynth sample` input checks for the image-to-image models."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2hed

from jaxsynth.data.phantom import render_ids, render_pairs, render_tile, tile_seed
from jaxsynth.data.stain import PROTOCOL_A, PROTOCOL_B, parse_phantom_id
from jaxsynth.errors import UserError

# sha256 of four tiles rendered by the phantom BEFORE stain protocols existed (commit 4ded464):
# protocol A must stay bitwise the phantom's rendering. Made by the snippet in
# `_digest` run on that commit's render_tile.
GOLDEN_A = "b97a24dfafc18f89d7dca5af5285ef03c9a7a810a0e1823fb5dd3348d1589c96"


def _digest(render) -> str:
    h = hashlib.sha256()
    for seed, label, size in [(1, 0, 64), (2, 1, 64), (3, 1, 32), (4, 0, 16)]:
        image, mask = render(seed, label, size)
        h.update(image.tobytes())
        h.update(mask.tobytes())
    return h.hexdigest()


def test_protocol_a_is_the_phantoms_original_rendering():
    assert _digest(render_tile) == GOLDEN_A
    assert _digest(lambda s, lab, z: render_tile(s, lab, z, protocol=PROTOCOL_A)) == GOLDEN_A


def test_pairs_share_layout_and_masks_exactly_and_protocol_b_differs():
    pairs = render_pairs(seed=7, indices=range(12), image_size=32)
    a, b, mask = pairs["a"], pairs["b"], pairs["mask"]
    assert a.shape == b.shape == (12, 32, 32, 3) and mask.shape == (12, 32, 32)
    # the mask of each tile is the same under both protocols, and equals the split's own mask
    for i in range(12):
        _, mask_b = render_tile(tile_seed(7, i), i % 2, 32, protocol=PROTOCOL_B)
        img_a, mask_a = render_tile(tile_seed(7, i), i % 2, 32)
        np.testing.assert_array_equal(mask_a, mask_b)
        np.testing.assert_array_equal(mask[i], mask_a)
        np.testing.assert_array_equal(a[i], img_a)
    np.testing.assert_array_equal(pairs["label"], np.arange(12) % 2)
    # same layout: the haematoxylin maps of a pair are strongly correlated (same nuclei) ...
    hed_a = rgb2hed(a.astype(float) / 255.0)
    hed_b = rgb2hed(b.astype(float) / 255.0)
    for i in range(12):
        r = np.corrcoef(hed_a[i, ..., 0].ravel(), hed_b[i, ..., 0].ravel())[0, 1]
        assert r > 0.9, (i, r)
    # ... but the colour deconvolution shifts clearly, in the same direction for every tile:
    # more haematoxylin, less eosin, a different lamp (background pixels).
    h_a, h_b = hed_a[..., 0].mean(axis=(1, 2)), hed_b[..., 0].mean(axis=(1, 2))
    e_a, e_b = hed_a[..., 1].mean(axis=(1, 2)), hed_b[..., 1].mean(axis=(1, 2))
    assert np.all(h_b > h_a) and np.all(e_b < e_a)
    assert (h_b - h_a).mean() > 0.02 and (e_a - e_b).mean() > 0.004
    # protocol A's vectors are off rgb2hed's axes (residual "DAB" channel); B's are on them
    d_a, d_b = hed_a[..., 2].mean(axis=(1, 2)), hed_b[..., 2].mean(axis=(1, 2))
    assert np.all(d_b < d_a) and (d_a - d_b).mean() > 0.01
    mean_abs_rgb = np.abs(a.astype(float) - b.astype(float)).mean()
    assert mean_abs_rgb > 10.0


def test_render_ids_reproduces_the_split_tiles_and_rejects_other_ids():
    from jaxsynth.data.phantom import PhantomSource

    src = PhantomSource(num_per_class=4, image_size=16, seed=3)
    images, masks, _ = src.render_batch(range(5))
    again, masks2 = render_ids([src.id_of(i) for i in range(5)], 16, "A")
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(masks, masks2)
    assert parse_phantom_id("phantom/-2/15") == (-2, 15)
    with pytest.raises(ValueError, match="not a phantom tile id"):
        render_ids(["folder/x.png"], 16, "B")
    with pytest.raises(ValueError, match="unknown stain protocol"):
        render_ids(["phantom/0/1"], 16, "C")


# ----------------------------------------------------------------------------- sample inputs
def _write(path, array):
    Image.fromarray(array).save(path)


def test_strict_mask_and_input_loading_gives_one_line_errors(tmp_path):
    from jaxsynth.commands.sample_i2i import load_binary_masks, load_input_tiles

    good = tmp_path / "good"
    good.mkdir()
    m = np.zeros((16, 16), np.uint8)
    m[4:8, 4:8] = 255
    _write(good / "a.png", m)
    _write(good / "b.png", (m > 0).astype(np.uint8))  # {0, 1} is binary too
    masks, names = load_binary_masks(good, 16)
    assert names == ["a.png", "b.png"] and masks.shape == (2, 16, 16, 1)
    np.testing.assert_array_equal(masks[0, ..., 0], m > 0)
    np.testing.assert_array_equal(masks[1], masks[0])

    cases = {
        "size": (np.zeros((20, 16), np.uint8), "20x16.*16x16"),
        "grey": (np.full((16, 16), 128, np.uint8), "not binary"),
    }
    for name, (array, message) in cases.items():
        d = tmp_path / name
        d.mkdir()
        _write(d / "m.png", array)
        with pytest.raises(UserError, match=message) as e:
            load_binary_masks(d, 16)
        assert "\n" not in str(e.value) and "m.png" in str(e.value)

    tiles = tmp_path / "tiles"
    tiles.mkdir()
    _write(tiles / "t.png", np.full((16, 16, 3), 200, np.uint8))
    images, names = load_input_tiles(tiles, 16)
    assert images.shape == (1, 16, 16, 3) and names == ["t.png"]
    for name, array, message in [
        ("wrong_size", np.zeros((32, 32, 3), np.uint8), "32x32.*16x16"),
        ("grey_tile", np.zeros((16, 16), np.uint8), "3 channels"),
        ("rgba", np.zeros((16, 16, 4), np.uint8), "3 channels"),
    ]:
        d = tmp_path / name
        d.mkdir()
        _write(d / "x.png", array)
        with pytest.raises(UserError, match=message) as e:
            load_input_tiles(d, 16)
        assert "\n" not in str(e.value) and "x.png" in str(e.value)
    with pytest.raises(UserError, match="no image files"):
        load_input_tiles(_empty(tmp_path), 16)


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d
