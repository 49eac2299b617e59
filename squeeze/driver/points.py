"""A stage's trials as explicit points, drawn on the driver: the same points, with the same keys, every time.

Ray Tune draws random samplers lazily and names trials with random ids, so a second driver cannot tell which of
its trials a first driver already finished. squeeze expands the search space itself: every grid combination
times ``num_samples``, random samplers drawn from a generator seeded by the stage's identity, and each point
named by a digest of its values (``key``). A trial's MLflow run carries that key (``squeeze.trial_id``), so a
resumed stage runs exactly the points that have no finished run, whatever Tune's own files say (squeeze never
restores Tune's pickled state: see ``stage``).
"""

from __future__ import annotations

import hashlib
import json
from itertools import product
from typing import Any

MAX_TRIALS = 10_000  # a grid larger than this is a typo (a 2.56M-point grid hung --dry-run)


def grid_size(node: Any) -> int:
    """Trials a Tune param space makes once: the product of its grid sizes."""
    if isinstance(node, dict):
        if set(node) == {"grid_search"}:
            return len(node["grid_search"])
        n = 1
        for v in node.values():
            n *= grid_size(v)
        return n
    return 1


def _paths(node: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, leaf) of every grid or sampler in a nested param space."""
    from ray.tune.search.sample import Domain

    if isinstance(node, dict) and set(node) == {"grid_search"}:
        return [(prefix, node)]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _paths(v, prefix + (k,))]
    return [(prefix, node)] if isinstance(node, Domain) else []


def _set(tree: dict, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        tree = tree[k]
    tree[path[-1]] = value


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    return node.item() if hasattr(node, "item") else node  # numpy scalars from the samplers


def key(point: dict) -> str:
    """A point's name: a digest of its values (never of the order it was drawn in)."""
    text = json.dumps({k: v for k, v in point.items() if k != "key"}, sort_keys=True, default=str)
    return "p" + hashlib.sha256(text.encode()).hexdigest()[:12]


def expand(space: dict, num_samples: int, seed: str) -> list[dict]:
    """Every trial of ``space`` as a plain dict with its ``key``; ``seed`` (the stage identity) fixes the random draws.

    Raises:
        ValueError: when the space makes more than ``MAX_TRIALS`` trials.
    """
    import copy

    import numpy as np

    total = num_samples * grid_size(space)
    if total > MAX_TRIALS:
        raise ValueError(f"the search space makes {total:,} trials (grid sizes times num_samples); at most "
                         f"{MAX_TRIALS:,} are allowed: shrink a grid or num_samples")
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:15], 16))
    leaves = _paths(space)
    grids = [(p, leaf["grid_search"]) for p, leaf in leaves if isinstance(leaf, dict)]
    domains = [(p, leaf) for p, leaf in leaves if not isinstance(leaf, dict)]
    out, seen = [], set()
    for _ in range(num_samples):
        for combo in product(*(values for _, values in grids)):
            point = copy.deepcopy({k: v for k, v in space.items()})
            for (path, _), value in zip(grids, combo):
                _set(point, path, value)
            for path, domain in domains:
                _set(point, path, domain.sample(random_state=rng))
            point = _plain(point)
            point["key"] = key(point)
            if point["key"] in seen:  # a repeated draw (a choice over few values): one trial, not two of the same
                continue
            seen.add(point["key"])
            out.append(point)
    return out
