"""EVP estimators against hand-computed values and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from analysis.evp import expected_max, expected_max_curve

S = [0.1, 0.5, 0.9]


@pytest.mark.parametrize("n,expected", [
    (1, 0.5),
    # with replacement: 0.1*(1/9) + 0.5*(4/9-1/9) + 0.9*(1-4/9) = (0.1 + 1.5 + 4.5)/9
    (2, (0.1 + 1.5 + 4.5) / 9),
    # 0.1*(1/27) + 0.5*(8/27-1/27) + 0.9*(19/27) = (0.1 + 3.5 + 17.1)/27
    (3, (0.1 + 3.5 + 17.1) / 27),
])
def test_with_replacement_hand_computed(n, expected):
    assert expected_max(S, n) == pytest.approx(expected)


@pytest.mark.parametrize("n,expected", [(1, 0.5), (2, (0.5 + 0.9 + 0.9) / 3), (3, 0.9)])
def test_unbiased_hand_computed(n, expected):
    # subsets of 2: {0.1,0.5}->0.5 {0.1,0.9}->0.9 {0.5,0.9}->0.9
    assert expected_max(S, n, method="unbiased") == pytest.approx(expected)


def test_n1_is_mean_and_monotone_to_max():
    rng = np.random.default_rng(0)
    v = rng.normal(size=12)
    for method in ("with_replacement", "unbiased"):
        assert expected_max(v, 1, method=method) == pytest.approx(v.mean())
    curve = [expected_max(v, n) for n in range(1, 200)]
    assert all(b >= a - 1e-12 for a, b in zip(curve, curve[1:]))
    assert curve[-1] == pytest.approx(v.max(), abs=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_unbiased_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    N = int(rng.integers(1, 9))
    v = np.round(rng.random(N), 1)  # rounding makes ties
    for n in range(1, N + 1):
        brute = np.mean([max(c) for c in itertools.combinations(v, n)])
        assert expected_max(v, n, method="unbiased") == pytest.approx(brute)
        brute_min = np.mean([min(c) for c in itertools.combinations(v, n)])
        assert expected_max(v, n, method="unbiased", mode="min") == pytest.approx(brute_min)


def test_min_mirrors_max():
    v = np.array([3.0, 1.0, 7.0, 2.0])
    for method in ("with_replacement", "unbiased"):
        for n in (1, 2, 4):
            assert expected_max(v, n, method=method, mode="min") == pytest.approx(-expected_max(-v, n, method=method))


def test_edge_cases():
    assert expected_max([0.7], 1) == 0.7 and expected_max([0.7], 5) == 0.7
    assert expected_max([0.2, np.nan, 0.4], 1) == pytest.approx(0.3)
    assert expected_max([0.5, 0.5, 0.5], 2, method="unbiased") == 0.5
    with pytest.raises(ValueError, match="n must be at least 1"):
        expected_max(S, 0)
    with pytest.raises(ValueError, match="needs n <= N"):
        expected_max(S, 4, method="unbiased")
    with pytest.raises(ValueError, match="no finite scores"):
        expected_max([np.nan], 1)


def test_curve_band_std_and_budget():
    rng = np.random.default_rng(1)
    v = list(rng.random(10)) + [np.nan]
    hours = list(rng.random(10) + 1) + [5.0]
    df = expected_max_curve(v, budgets=hours, n_bootstrap=300)
    assert list(df.columns) == ["n", "mean", "std", "lower", "upper", "budget"]
    assert df.attrs["n_failed"] == 1 and df.attrs["N"] == 10
    assert ((df["lower"] <= df["mean"]) & (df["mean"] <= df["upper"])).all()
    assert df["std"].iloc[0] == pytest.approx(np.nanstd(v[:10]))
    assert df["budget"].iloc[2] == pytest.approx(3 * np.mean(hours[:10]))
    un = expected_max_curve(v, method="unbiased", n_bootstrap=100)
    assert len(un) == 10 and un["mean"].iloc[-1] == pytest.approx(np.nanmax(v))
