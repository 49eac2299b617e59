"""Non-dominated sorting and hypervolume, pure NumPy.

Points are rows of objective values with a direction each (``"min"`` or ``"max"``); everything here first turns
them into costs (lower is better) by negating the ``max`` columns. A point dominates another when it is no worse
in every objective and better in one. The hypervolume is the measure of the region the front dominates and that
dominates the reference point (Zitzler & Thiele 1998), computed exactly by slicing on the first objective.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def costs(points, modes: Sequence[str]) -> np.ndarray:
    """The points as costs: ``max`` objectives negated."""
    x = np.asarray(points, dtype=float).reshape(len(points), len(modes)) if len(points) else np.zeros((0, len(modes)))
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return x * sign


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Cost vector ``a`` dominates ``b``."""
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_mask(x: np.ndarray) -> np.ndarray:
    """Which rows of the cost matrix ``x`` no other row dominates (equal rows are all kept)."""
    n = len(x)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        better_eq = np.all(x <= x[i], axis=1) & np.any(x < x[i], axis=1)
        keep[i] = not better_eq.any()
    return keep


def fronts(x: np.ndarray) -> list[np.ndarray]:
    """The rows of ``x`` in successive non-dominated fronts (NSGA-II's sorting): indices of front 0, 1, ..."""
    left = np.arange(len(x))
    out = []
    while left.size:
        mask = pareto_mask(x[left])
        out.append(left[mask])
        left = left[~mask]
    return out


def spread_order(x: np.ndarray) -> np.ndarray:
    """The rows of one front, best first: the lowest first cost, then each time the row farthest from those taken
    (an epsilon-net, as MO-ASHA's reference implementation in Syne Tune orders a front; Clarkson 2005); ties by
    index. Costs are scaled to [0, 1] per objective so that no unit dominates the distance."""
    n = len(x)
    if n <= 1:
        return np.arange(n)
    span = x.max(axis=0) - x.min(axis=0)
    z = (x - x.min(axis=0)) / np.where(span > 0, span, 1.0)
    order = [int(np.lexsort(z.T[::-1])[0])]
    left = [i for i in range(n) if i != order[0]]
    while left:
        d = np.linalg.norm(z[left][:, None, :] - z[order][None, :, :], axis=-1).min(axis=1)
        pick = left[int(np.argmax(d))]
        order.append(pick)
        left.remove(pick)
    return np.array(order)


def rank(x: np.ndarray) -> np.ndarray:
    """Every row's position in the multi-objective order: front by front, each front in ``spread_order``."""
    pos = np.empty(len(x), dtype=int)
    k = 0
    for f in fronts(x):
        for i in f[spread_order(x[f])]:
            pos[i] = k
            k += 1
    return pos


def hypervolume(points, modes: Sequence[str], reference: Sequence[float]) -> float:
    """Hypervolume of ``points`` (objective values) against ``reference`` (in the same units and directions); points
    that do not strictly dominate the reference add nothing."""
    x = costs(points, modes)
    ref = costs([list(reference)], modes)[0]
    x = x[np.all(x < ref, axis=1)] if len(x) else x
    if not len(x):
        return 0.0
    return float(_hv(x[pareto_mask(x)], ref))


def _hv(x: np.ndarray, ref: np.ndarray) -> float:
    if x.shape[1] == 1:
        return float(ref[0] - x[:, 0].min())
    order = np.argsort(x[:, 0])
    x = x[order]
    total = 0.0
    for i in range(len(x)):  # the slab between this point's first cost and the next one's
        upper = x[i + 1, 0] if i + 1 < len(x) else ref[0]
        width = upper - x[i, 0]
        if width > 0:
            sub = x[: i + 1, 1:]
            total += width * _hv(sub[pareto_mask(sub)], ref[1:])
    return total
