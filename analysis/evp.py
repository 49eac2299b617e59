"""Expected validation performance (pure NumPy; no plotting, no MLflow).

Dodge et al. 2019, "Show Your Work": given N trial scores, the expected best score after n
trials drawn i.i.d. (with replacement) from the same search:

    E[max_n] = sum_i v_(i) * ((i/N)^n - ((i-1)/N)^n),   v_(1) <= ... <= v_(N)

Dodge et al. 2021, "Expected Validation Performance and Estimation of a Random Variable's
Maximum": the unbiased estimator is the exact mean of the maximum of a uniformly random
n-subset (without replacement), so it needs n <= N:

    E[max_n] = sum_i v_(i) * C(i-1, n-1) / C(N, n)

``mode="min"`` gives the expected minimum (perplexity, TER). Both estimators assume the trials
are i.i.d. draws of a random search; a grid is not, and reports say so.
"""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd

METHODS = ("with_replacement", "unbiased")


def _clean(scores) -> tuple[np.ndarray, int]:
    a = np.asarray(scores, dtype=float).ravel()
    keep = ~np.isnan(a)
    return a[keep], int((~keep).sum())


def _weights(N: int, n: int, method: str) -> np.ndarray:
    """Probability that the i-th smallest of N scores is the maximum of n draws."""
    i = np.arange(1, N + 1, dtype=float)
    if method == "with_replacement":
        return (i / N) ** n - ((i - 1) / N) ** n
    # C(k-1, n-1) / C(N, n) divided as Python integers (correctly rounded): the binomials themselves overflow a
    # float from N of about 1,000 on
    total = comb(N, n)
    return np.array([comb(k - 1, n - 1) / total for k in range(1, N + 1)])


def _check(N: int, n: int, method: str, mode: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if N == 0:
        raise ValueError("no finite scores: every trial failed or none was given")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if method == "unbiased" and n > N:
        raise ValueError(f"the unbiased estimator needs n <= N; got n={n} with N={N} scores")


def _moments(v: np.ndarray, n: int, method: str, mode: str) -> tuple[float, float]:
    sign = 1.0 if mode == "max" else -1.0
    s = np.sort(sign * v)
    w = _weights(len(s), n, method)
    mean = float(w @ s)
    var = max(float(w @ (s * s)) - mean * mean, 0.0)
    return sign * mean, float(np.sqrt(var))


def expected_max(scores, n: int, *, method: str = "with_replacement", mode: str = "max") -> float:
    """Expected best of ``n`` trials (NaN scores, i.e. failed trials, are dropped).

    Args:
        scores: the trials' validation scores.
        n: number of trials in the hypothetical budget.
        method: ``"with_replacement"`` (Dodge 2019) or ``"unbiased"`` (Dodge 2021).
        mode: ``"max"`` for higher-is-better metrics, ``"min"`` for perplexity, TER.

    Raises:
        ValueError: n < 1, n > N for the unbiased method, or no finite score.
    """
    v, _ = _clean(scores)
    _check(len(v), n, method, mode)
    return _moments(v, n, method, mode)[0]


def expected_max_curve(scores, *, method: str = "with_replacement", mode: str = "max", budgets=None,
                       n_max: int | None = None, n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """EVP for n = 1..n_max with the estimator's spread and a bootstrap band.

    Args:
        scores: trial scores (NaN = failed trial, dropped and counted in ``df.attrs["n_failed"]``).
        budgets: optional per-trial cost (hours, kWh, kg CO2), aligned with ``scores``; adds the
            expected cumulative budget of n trials (n times the mean cost of a trial).
        n_max: largest n (default N).
        n_bootstrap, ci, seed: percentile bootstrap over the trials.

    Returns:
        DataFrame with columns n, mean, std, lower, upper (and budget).
    """
    raw = np.asarray(scores, dtype=float).ravel()
    v, failed = _clean(raw)
    N = len(v)
    n_max = n_max or N
    _check(N, n_max if method == "unbiased" else 1, method, mode)
    rng = np.random.default_rng(seed)
    boot = v[rng.integers(0, N, size=(n_bootstrap, N))] if N > 1 else np.repeat(v[None, :], n_bootstrap, 0)
    lo_q, hi_q = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100
    rows = []
    for n in range(1, n_max + 1):
        mean, std = _moments(v, n, method, mode)
        dist = np.array([_moments(b, n, method, mode)[0] for b in boot])
        rows.append({"n": n, "mean": mean, "std": std,
                     "lower": float(np.percentile(dist, lo_q)), "upper": float(np.percentile(dist, hi_q))})
    df = pd.DataFrame(rows)
    if budgets is not None:
        b = np.asarray(budgets, dtype=float).ravel()
        if b.shape != raw.shape:
            raise ValueError(f"budgets has {b.size} values for {raw.size} scores")
        per_trial = float(np.nanmean(b[~np.isnan(raw)]))
        df["budget"] = df["n"] * per_trial
    df.attrs.update(n_failed=failed, N=N, method=method, mode=mode)
    return df
