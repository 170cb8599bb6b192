"""KID and precision/recall/density/coverage against plain-loop numpy references."""

import itertools

import numpy as np
import pytest

from jaxsynth.eval import kid, prdc


def ref_mmd2(x, y):
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)^3, written as explicit sums over pairs."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3
    m = len(x)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_mmd2_equals_reference():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((9, 5)), rng.standard_normal((9, 5)) + 0.5
    assert kid.mmd2_unbiased(x, y) == pytest.approx(ref_mmd2(x, y), rel=1e-10)


def test_kid_subsets_equal_reference_and_behave():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((30, 4))
    fake = rng.standard_normal((25, 4)) * 1.5
    out = kid.kid(real, fake, subset_size=8, num_subsets=5, seed=3)
    # Same subsets, drawn with the same generator, through the reference.
    r = np.random.default_rng(3)
    vals = []
    for _ in range(5):
        xr = real[r.choice(30, 8, replace=False)]
        xf = fake[r.choice(25, 8, replace=False)]
        vals.append(ref_mmd2(xr, xf))
    assert out["mean"] == pytest.approx(np.mean(vals), rel=1e-9)
    assert out["std"] == pytest.approx(np.std(vals), rel=1e-9)
    assert out["subset_size"] == 8
    # Unbiased: same distribution -> mean ~ 0 (can be negative); shifted -> clearly positive.
    same = kid.kid(real, rng.standard_normal((30, 4)), subset_size=20, num_subsets=50)
    far = kid.kid(real, rng.standard_normal((30, 4)) + 2.0, subset_size=20, num_subsets=50)
    assert abs(same["mean"]) < 3 * same["std"] + 0.05 and far["mean"] > 10 * abs(same["mean"])


def test_kid_caps_the_subset_and_reports_no_std_when_a_subset_is_a_whole_set():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((15, 4)), rng.standard_normal((15, 4)) + 0.3
    out = kid.kid(a, b, subset_size=1000, num_subsets=4)
    assert (out["subset_size"], out["capped"], out["std"]) == (15, True, None)
    assert out["mean"] == pytest.approx(kid.mmd2_unbiased(a, b), rel=1e-9)  # whole sets
    uneven = kid.kid(a, rng.standard_normal((40, 4)), subset_size=100, num_subsets=4)
    assert (uneven["subset_size"], uneven["std"]) == (15, None)  # real set whole in every subset
    fine = kid.kid(a, b, subset_size=10, num_subsets=4)
    assert (fine["capped"], fine["std"] > 0) == (False, True)


def ref_prdc(real, fake, k):
    dist = lambda a, b: np.sqrt(((a - b) ** 2).sum())

    def radii(x):
        return np.array([sorted(dist(p, q) for q in x)[k] for p in x])  # [0] is itself

    rr, rf = radii(real), radii(fake)
    precision = np.mean([any(dist(f, r) < rr[i] for i, r in enumerate(real)) for f in fake])
    recall = np.mean([any(dist(r, f) < rf[j] for j, f in enumerate(fake)) for r in real])
    density = np.mean([sum(dist(f, r) < rr[i] for i, r in enumerate(real)) for f in fake]) / k
    coverage = np.mean([min(dist(r, f) for f in fake) < rr[i] for i, r in enumerate(real)])
    return precision, recall, density, coverage


def test_prdc_equals_reference():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((40, 3))
    fake = np.concatenate([rng.standard_normal((20, 3)) * 0.5, rng.standard_normal((15, 3)) + 3])
    out = prdc.prdc(real, fake, k=4)
    p, r, d, c = ref_prdc(real, fake, 4)
    assert (out["precision"], out["recall"], out["density"], out["coverage"]) == pytest.approx(
        (p, r, d, c), abs=1e-12
    )
    # Mode collapse: fakes that are all near one real point have low coverage.
    collapsed = real[0] + 0.01 * rng.standard_normal((20, 3))
    assert prdc.prdc(real, collapsed, k=4)["coverage"] < 0.2
