"""FID: parity of the Flax Inception with pytorch-fid, Fréchet distance vs scipy, FID behaviour."""

import json
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

from jaxsynth.eval import fid, inception
from jaxsynth.eval.features import DomainExtractor, InceptionExtractor, PixelExtractor

FIX = Path(__file__).parent / "fixtures" / "fid"
sys.path.insert(0, str(FIX))
import seeded_weights  # noqa: E402


@pytest.fixture(scope="module")
def seeded_variables():
    return seeded_weights.flax_inception_variables()


def test_parity_with_pytorch_fid(seeded_variables):
    """Same seeded weights, same images: features within 1e-4 relative, same FID."""
    meta = json.loads((FIX / "parity.json").read_text())
    ref = np.load(FIX / "parity.npz")
    assert meta["seed"] == seeded_weights.SEED
    extract = InceptionExtractor(variables=seeded_variables, batch_size=3)
    feats = {}
    for name in ("a", "b"):
        imgs = seeded_weights.images(meta["image_sizes"][name], meta["num_images"][name])
        feats[name] = extract(imgs)
        want = ref[f"features_{name}"]
        assert feats[name].shape == want.shape == (3, 2048)
        rel = np.abs(feats[name] - want).max() / np.abs(want).max()
        assert rel < 1e-4, f"set {name}: max relative error {rel:.2e}"
    # Our FID on pytorch-fid's own features reproduces its number (3 vs 2048-d: the exact
    # low-rank path, against pytorch-fid's sqrtm of the singular product)...
    assert fid.fid_from_features(ref["features_a"], ref["features_b"]) == pytest.approx(
        meta["fid_ab"], rel=1e-6
    )
    # ...and on the Flax features it reproduces both pytorch-fid numbers (features, PNG paths).
    ours = fid.fid_from_features(feats["a"], feats["b"])
    assert ours == pytest.approx(meta["fid_ab"], rel=1e-4)
    assert ours == pytest.approx(meta["fid_ab_from_paths"], rel=1e-4)


def test_weights_conversion_is_cached_by_file_hash(tmp_path, monkeypatch, seeded_variables):
    spec = inception.torch_state_dict_spec()
    sd = seeded_weights.state_dict(spec)
    sd["fc.weight"] = np.zeros((1008, 2048), np.float32)  # extra keys are ignored
    calls = []

    def fake_reader(path):
        calls.append(path)
        return sd

    monkeypatch.setattr(inception, "load_state_dict", fake_reader)
    pth = tmp_path / "pt_inception.pth"
    pth.write_bytes(b"stand-in bytes")
    v1 = inception.load_inception_params(pth, tmp_path / "cache")
    v2 = inception.load_inception_params(pth, tmp_path / "cache")
    assert len(calls) == 1 and len(list((tmp_path / "cache").glob("fid_inception_*.npz"))) == 1
    for a, b, c in zip(
        jax.tree.leaves(v1), jax.tree.leaves(v2), jax.tree.leaves(seeded_variables), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
        np.testing.assert_array_equal(np.asarray(b), np.asarray(c))
    del sd["Mixed_7c.branch_pool.conv.weight"]
    pth.write_bytes(b"other bytes")
    with pytest.raises(Exception, match="Mixed_7c.branch_pool.conv.weight"):
        inception.load_inception_params(pth, tmp_path / "cache")


def _scipy_reference_fd(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_equals_scipy_reference_and_closed_form():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 12))
    y = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12)) * 0.5 + 1.0
    assert fid.fid_from_features(x, y) == pytest.approx(_scipy_reference_fd(x, y), rel=1e-10)
    # Closed form for diagonal Gaussians: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu = np.array([1.0, 2.0, 3.0])
    want = (mu**2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert fid.frechet_distance(mu, np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(want)
    assert fid.fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_lowrank_path_equals_sqrtm_when_fewer_samples_than_dims():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 64)) * 2.0
    y = rng.standard_normal((7, 64)) + 0.3
    sqrtm_value = fid.frechet_distance(*fid.statistics(x), *fid.statistics(y))
    assert fid.fid_from_features(x, y) == pytest.approx(sqrtm_value, rel=1e-6)
    assert fid.frechet_distance_lowrank(x, y) == pytest.approx(_scipy_reference_fd(x, y), rel=1e-6)


class _TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        return jnp.concatenate([x.mean((1, 2)), x.std((1, 2))], axis=-1)


def test_fid_zero_on_same_set_and_monotone_in_noise():
    rng = np.random.default_rng(0)
    imgs = seeded_weights.images(16, 96, seed=3)
    net = _TinyNet()
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    extract = DomainExtractor(lambda x: net.apply(params, x), "tiny-random", batch_size=32)
    f0 = extract(imgs)
    assert extract.id == "domain:tiny-random" and f0.shape == (96, 16)
    assert fid.fid_from_features(f0, f0) == pytest.approx(0.0, abs=1e-6)
    noise = rng.standard_normal(imgs.shape)
    values = []
    for sigma in (4, 12, 30, 60):
        noisy = np.clip(imgs + sigma * noise, 0, 255).astype(np.uint8)
        values.append(fid.fid_from_features(f0, extract(noisy)))
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
    assert values[0] > 0


def test_cached_statistics_reused_only_for_same_content(tmp_path):
    imgs = seeded_weights.images(16, 10, seed=4)
    pix = PixelExtractor(8)
    calls = []

    def counting(x):
        calls.append(len(x))
        return pix(x)

    s1 = fid.cached_statistics(imgs, counting, pix.id, tmp_path)
    s2 = fid.cached_statistics(imgs, counting, pix.id, tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(s1[1], s2[1])
    changed = imgs.copy()
    changed[0, 0, 0, 0] ^= 1
    fid.cached_statistics(changed, counting, pix.id, tmp_path)
    fid.cached_statistics(imgs, counting, "another-extractor", tmp_path)
    assert len(calls) == 3
    mu, sigma = fid.statistics(pix(imgs))
    np.testing.assert_allclose(s1[0], mu)
    np.testing.assert_allclose(s1[1], sigma)
