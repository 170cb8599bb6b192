"""Hierarchical bootstrap on simulated studies whose variance components are known.

Run (g, s) scores test image i with loss μ + a_g + b_gs + e_i + ε_gsi (generator, classifier,
test image, run×image noise); the arm metric is the mean loss. Truth: μ = 0, σ²_gen = σ_g²,
σ²_cls (run-to-run spread on one test set) = σ_c² + σ_ε²/N, test-set variance of the seed-mean
≈ (σ_e² + σ_ε²/(G·S)) / N.
"""

import numpy as np
import pytest

from jaxsynth.eval import hierarchical as hb

SG, SC, SE, SEPS = 0.02, 0.01, 0.1, 0.05


def _resample_counts(rng, N, B):
    """(B, N) float counts of each test image in B bootstrap resamples."""
    flat = (rng.integers(0, N, (B, N)) + N * np.arange(B)[:, None]).ravel()
    return np.bincount(flat, minlength=B * N).reshape(B, N).astype(np.float64)


def _study(rng, G, S, N, B, sg=SG, sc=SC, se=SE, seps=SEPS, shift=0.0, idx=None):
    a = rng.normal(0, sg, G)
    b = rng.normal(0, sc, (G, S))
    e = rng.normal(0, se, N) if idx is None else idx[1]
    eps = rng.normal(0, seps, (G, S, N))
    loss = (shift + a[:, None, None] + b[:, :, None] + e + eps).reshape(G * S, N)
    counts = _resample_counts(rng, N, B) if idx is None else idx[0]
    draws = (counts @ loss.T).T / N
    return draws, loss.mean(1), np.repeat(np.arange(G), S)


def test_seed_weights_resample_generators_then_their_classifier_seeds():
    rng = np.random.default_rng(0)
    groups = np.array([0, 0, 0, 1, 1, 2])  # 3 generator seeds with 3, 2, 1 classifier seeds
    w = hb.seed_weights(groups, 20000, rng)
    np.testing.assert_allclose(w.sum(1), 1.0)
    # each generator seed is drawn 1/3 of the time on average, shared equally by its seeds
    np.testing.assert_allclose(w.mean(0), [1 / 9] * 3 + [1 / 6] * 2 + [1 / 3], atol=0.005)
    # the generator level's mass per replicate is a multiple of 1/3 (whole generator draws)
    mass = np.stack([w[:, groups == g].sum(1) for g in range(3)], 1)
    np.testing.assert_allclose(mass * 3, np.round(mass * 3), atol=1e-9)
    assert hb.grand_mean([1, 2, 3, 10, 20, 7], groups) == pytest.approx((2 + 15 + 7) / 3)


@pytest.mark.slow  # ~8 s of CPU; 30-60 s of wall time on the shared 2-core machine
def test_variance_components_recovered_and_interval_covers_95_percent():
    """600 simulated studies (G=8 generator seeds × 3 classifier seeds, 100 test images): the
    mean estimated components match the truth and the 95 % interval covers μ 95 % ± 3 %."""
    rng = np.random.default_rng(0)
    G, S, N, B, K = 8, 3, 100, 400, 600
    hits, vg, vc, vt = 0, [], [], []
    for _ in range(K):
        draws, point, groups = _study(rng, G, S, N, B)
        r = hb.hierarchical_bootstrap(draws, point, groups, seed=int(rng.integers(1 << 30)))
        lo, hi = r["ci95"]
        hits += lo <= 0.0 <= hi
        vg.append(r["variance"]["components"]["generator"])
        vc.append(r["variance"]["components"]["classifier"])
        vt.append(r["variance"]["contribution"]["test_set"])
    assert np.mean(vg) == pytest.approx(SG**2, rel=0.15)
    assert np.mean(vc) == pytest.approx(SC**2 + SEPS**2 / N, rel=0.1)
    assert np.mean(vt) == pytest.approx((SE**2 + SEPS**2 / (G * S)) / N, rel=0.1)
    assert abs(hits / K - 0.95) <= 0.03, hits / K


def test_variance_split_says_what_it_cannot_estimate():
    one_gen = hb.variance_split([0.5, 0.6, 0.7], [0, 0, 0], np.zeros(10) + [0, 1] * 5)
    assert np.isnan(one_gen["components"]["generator"])
    assert one_gen["components"]["classifier"] == pytest.approx(0.01)
    assert one_gen["contribution"]["classifier"] == pytest.approx(0.01 / 3)
    no_gen = hb.variance_split([0.5, 0.6, 0.7], [0, 0, 0], np.zeros(10), has_generator=False)
    assert no_gen["components"]["generator"] == 0.0
    one_seed = hb.variance_split([0.5, 0.7], [0, 1], np.zeros(10))
    assert np.isnan(one_seed["components"]["classifier"])
    assert one_seed["components"]["generator"] == pytest.approx(0.02)  # gen + cls, pooled
    assert one_seed["generator_includes_classifier"]


def test_paired_delta_keeps_the_test_pairing():
    """Two arms on the same test images: the shared image effect cancels in Δ, so Δ's interval
    is far narrower than either arm's, and it is centred on the planted shift."""
    rng = np.random.default_rng(1)
    N, B = 200, 1000
    counts = _resample_counts(rng, N, B)
    e = rng.normal(0, 0.3, N)  # large per-image difficulty shared by both arms
    ref = hb.hierarchical_bootstrap(
        *_study(rng, 1, 5, N, B, sg=0, se=0, idx=(counts, e)), seed=1, has_generator=False
    )
    arm = hb.hierarchical_bootstrap(*_study(rng, 6, 3, N, B, shift=0.1, idx=(counts, e)), seed=2)
    d = hb.delta(arm, ref)
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert width(d) < 0.5 * width(ref)
    assert d["ci95"][0] < 0.1 < d["ci95"][1] and d["ci95"][0] > 0
    assert d["p_value"] < 0.01
    assert (
        d["variance_contribution"]["test_set"] < 0.1 * ref["variance"]["contribution"]["test_set"]
    )
