"""SSIM / MS-SSIM / PSNR against scikit-image and a scipy reference; set-to-set modes."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxsynth.eval import image_metrics as im


def sk_ssim(a, b, data_range=255):
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=-1,
    )


def random_pairs(seed=0, n=4, size=32):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 60, a.shape), 0, 255).astype(np.uint8)
    return a, b


def tissue_pairs():
    """Real-looking images: crops of skimage's IHC tissue image, and degraded copies."""
    ihc = data.immunohistochemistry()
    rng = np.random.default_rng(1)
    crops = np.stack([ihc[y : y + 48, x : x + 48] for y, x in [(0, 0), (100, 200), (300, 50)]])
    blurred = ndimage.gaussian_filter(crops.astype(float), (0, 1.2, 1.2, 0))
    noisy = np.clip(blurred + rng.normal(0, 6, crops.shape), 0, 255).astype(np.uint8)
    return crops, noisy


@pytest.mark.parametrize("pairs", [random_pairs, tissue_pairs])
def test_ssim_and_psnr_equal_skimage(pairs):
    a, b = pairs()
    got = np.asarray(im.ssim(a, b))
    ref = np.array([sk_ssim(a[i], b[i]) for i in range(len(a))])
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    got_p = np.asarray(im.psnr(a, b))
    ref_p = np.array([peak_signal_noise_ratio(a[i], b[i], data_range=255) for i in range(len(a))])
    np.testing.assert_allclose(got_p, ref_p, atol=1e-4, rtol=0)


def test_ssim_float_data_range_and_single_channel():
    rng = np.random.default_rng(3)
    a = rng.random((20, 24, 1))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    assert abs(float(im.ssim(a, b, data_range=1.0)[0]) - sk_ssim(a, b, 1.0)) < 1e-4
    assert float(im.ssim(a, a, data_range=1.0)[0]) == pytest.approx(1.0, abs=1e-6)


def _ref_ms_ssim(a, b, weights):
    """Independent float64 MS-SSIM: scipy gaussian_filter statistics at each 2x-pooled scale."""
    x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for s in range(len(weights)):
        f = lambda z: ndimage.gaussian_filter(z, (1.5, 1.5, 0), truncate=3.5, mode="reflect")
        ux, uy = f(x), f(y)
        vx, vy, vxy = f(x * x) - ux**2, f(y * y) - uy**2, f(x * y) - ux * uy
        cs = (2 * vxy + c2) / (vx + vy + c2)
        ssim = (2 * ux * uy + c1) / (ux**2 + uy**2 + c1) * cs
        m = (ssim if s == len(weights) - 1 else cs)[5:-5, 5:-5].mean()
        vals.append(max(m, 0.0) ** weights[s])
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean((1, 3))
        y = y[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean((1, 3))
    return float(np.prod(vals))


def test_ms_ssim_matches_reference_and_scales():
    assert im.ms_ssim_num_scales(32, 32) == 2  # 32, 16 (8 < 11-px window)
    assert im.ms_ssim_num_scales(176, 176) == 5
    w = im.ms_ssim_weights(2)
    assert sum(w) == pytest.approx(1.0) and w[0] / w[1] == pytest.approx(0.0448 / 0.2856)
    crops, noisy = tissue_pairs()
    a = np.stack([data.immunohistochemistry()[:96, :96]] * 2)
    b = np.stack([noisy[0].repeat(2, 0).repeat(2, 1)[:96, :96], a[0][::-1]])
    got = np.asarray(im.ms_ssim(a, b))
    n = im.ms_ssim_num_scales(96, 96)
    assert n == 4
    ref = [_ref_ms_ssim(a[i], b[i], im.ms_ssim_weights(n)) for i in range(2)]
    np.testing.assert_allclose(got, ref, atol=1e-4)
    np.testing.assert_allclose(np.asarray(im.ms_ssim(a, a)), 1.0, atol=1e-5)


@pytest.mark.parametrize("block", [None, 3 * 16 * 16 * 3])
def test_ssim_to_set_equals_loop_over_skimage(block, monkeypatch):
    """5 reals x 3 fakes: padded blocks; `block` = 3 pairs per block forces many blocks."""
    if block:
        monkeypatch.setattr(im, "PAIR_BLOCK_FLOATS", block)
    rng = np.random.default_rng(5)
    real = rng.integers(0, 256, (5, 16, 16, 3)).astype(np.uint8)
    fake = np.concatenate([real[:1], rng.integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)])
    out = im.ssim_to_set(fake, real)
    ref = np.array([[sk_ssim(f, r) for r in real] for f in fake])
    np.testing.assert_allclose(out["per_image_mean"], ref.mean(1), atol=1e-4)
    np.testing.assert_allclose(out["per_image_max"], ref.max(1), atol=1e-4)
    assert out["mean"] == pytest.approx(ref.mean(), abs=1e-4)
    assert out["max"] == pytest.approx(ref.max(1).mean(), abs=1e-4)
    assert out["argmax"][0] == 0 and out["per_image_max"][0] == pytest.approx(1.0, abs=1e-5)
    p = im.psnr_to_set(fake[1:], real)
    ref_p = [max(peak_signal_noise_ratio(r, f, data_range=255) for r in real) for f in fake[1:]]
    np.testing.assert_allclose(p["per_image"], ref_p, atol=1e-6)


def test_diversity_is_one_for_copies_and_lower_for_distinct_images():
    crops, _ = tissue_pairs()
    same = np.stack([crops[0]] * 4)
    assert im.ms_ssim_diversity(same)["mean"] == pytest.approx(1.0, abs=1e-5)
    div = im.ms_ssim_diversity(crops)
    assert div["num_pairs"] == 3 and div["mean"] < 0.9
    sub = im.ms_ssim_diversity(np.concatenate([crops] * 3), max_pairs=5, seed=1)
    assert sub["num_pairs"] == 5
