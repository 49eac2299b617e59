"""Searching the technique itself: one stage compares several recipes from one source, with conditional knobs.

::

    - name: oneshot
      source: {sweep: baseline, select: best}
      search: {algorithm: nsga2}
      search_space:
        technique: {choice: [dq, rtn, gptq, sparsegpt, [sparsegpt, gptq]]}
        gptq.bits: {choice: [4, 8]}              # only where the recipe runs gptq
        sparsegpt.sparsity: {uniform: [0.3, 0.7]}

Each alternative is what ``technique:`` takes (a name or a composition); ``grid_search`` runs every alternative
with its own grid, ``choice`` draws one per sample. A ``<technique>.<param>`` key applies only to the
alternatives that run that technique, a training field (``lr``) only to those that train: a trial's point holds
the values that change what it computes, and nothing else, so no two trials compute the same thing. The sweep's
``technique`` becomes the union of the alternatives (what preflight and the data must serve); each alternative is
validated as a sweep of its own, and each trial runs one (``resolve``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from squeeze.config import SweepCfg

KEY = "technique"
SAMPLERS = ("grid_search", "choice")
EXAMPLE = "{choice: [dq, gptq, [sparsegpt, gptq]]}"


def normalize(raw: dict) -> dict:
    """A raw sweep whose ``search_space`` names ``technique``: its alternatives as lists, ``technique`` their union.

    Raises:
        ValueError: naming the field and what is allowed.
    """
    from squeeze.registry import get_technique_class, technique_label

    space = raw.get("search_space")
    if not isinstance(space, dict) or KEY not in space:
        return raw
    if KEY in raw:
        raise ValueError("technique: this sweep searches its technique (search_space.technique); list the "
                         "alternatives there only and drop `technique:`")
    spec = space[KEY]
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
        raise ValueError(f"search_space.technique: expected grid_search or choice over techniques or compositions, "
                         f"e.g. {EXAMPLE}")
    (sampler, alts), = spec.items()
    if not isinstance(alts, list) or len(alts) < 2:
        raise ValueError(f"search_space.technique.{sampler}: list at least two alternatives, e.g. {EXAMPLE} (one is "
                         "`technique:`)")
    out = []
    for i, alt in enumerate(alts):
        alt = [alt] if isinstance(alt, str) else alt
        if not isinstance(alt, list) or not alt or not all(isinstance(t, str) for t in alt):
            raise ValueError(f"search_space.technique.{sampler}.{i}: a technique name or a list of names, got {alt!r}")
        for t in alt:
            try:
                get_technique_class(t)
            except KeyError as exc:
                raise ValueError(f"search_space.technique.{sampler}.{i}: {str(exc).strip(chr(34))}") from None
        out.append(list(alt))
    labels = [technique_label(a) for a in out]
    twice = next((lab for lab in labels if labels.count(lab) > 1), None)
    if twice is not None:  # [gptq, sparsegpt] and [sparsegpt, gptq] are one label: refused, not run as one
        raise ValueError(f"search_space.technique.{sampler}: {twice!r} is listed twice (a composition is named by its "
                         "techniques, whatever their order)")
    union: list[str] = []
    for alt in out:
        union += [t for t in alt if t not in union]
    return {**raw, KEY: union, "search_space": {**space, KEY: {sampler: out}}}


def searched(sweep: SweepCfg) -> bool:
    return KEY in sweep.search_space


def alternatives(sweep: SweepCfg) -> list[list[str]]:
    """The recipes the stage compares: its one technique list when it does not search it."""
    if not searched(sweep):
        return [list(sweep.technique)]
    return [list(a) for a in next(iter(sweep.search_space[KEY].values()))]


def sampler(sweep: SweepCfg) -> str:
    return next(iter(sweep.search_space[KEY]))


def post_training(techniques: list[str]) -> bool:
    from squeeze.registry import get_technique_class

    return any(get_technique_class(t).post_training for t in techniques)


def applies(tech: str | None, field: str, alt: list[str]) -> bool:
    """Does search-space key ``tech.field`` (``tech`` None: a train field) change what recipe ``alt`` computes?"""
    from squeeze.driver.overrides import TRAINING_ONLY

    if tech is not None:
        return tech in alt
    return not (post_training(alt) and field in TRAINING_ONLY)


def space_for(space: dict, techniques: list[str], alt: list[str]) -> dict:
    """The keys of a stage's ``space`` (its technique list ``techniques``) that apply to alternative ``alt``."""
    from squeeze.driver.search_space import split_key

    return {k: v for k, v in space.items() if k != KEY and applies(*split_key(k, techniques), alt)}


def alternative(sweep: SweepCfg, alt: list[str]) -> SweepCfg:
    """The stage as a sweep of one recipe: its technique, its params, the keys of the space that apply to it, and 0
    epochs when it is post-training (no validation: the config validated every alternative)."""
    space = space_for(sweep.search_space, sweep.technique, alt)
    train = sweep.train.model_copy(update={"epochs": 0}) if post_training(alt) else sweep.train
    return sweep.model_copy(update={KEY: list(alt), "params": {t: v for t, v in sweep.params.items() if t in alt},
                                    "search_space": space, "train": train})


def raw_alternative(raw: dict, alt: list[str]) -> dict:
    """A validated stage's dump as the raw sweep of one alternative, to validate it as a sweep of its own."""
    from squeeze.driver.overrides import TRAINING_ONLY

    space = space_for(raw.get("search_space", {}), raw[KEY], alt)
    out = {**raw, KEY: list(alt), "params": {t: v for t, v in raw.get("params", {}).items() if t in alt},
           "search_space": space, "num_samples": 1}  # the stage's search and size are checked on the stage
    out.pop("search", None)
    out.pop("budget", None)
    if post_training(alt):
        out["train"] = {k: v for k, v in raw.get("train", {}).items() if k not in TRAINING_ONLY}
    return out


def label(sweep: SweepCfg) -> str:
    """The stage's name for what it runs: ``dq | gptq | gptq+sparsegpt`` when it searches the technique."""
    from squeeze.registry import technique_label

    return " | ".join(technique_label(a) for a in alternatives(sweep))


def points(sweep: SweepCfg, ident: str, expand, param_space) -> tuple[list[dict], int]:
    """Every trial of a technique-searching stage under grid/random search, and how many were asked for:
    ``grid_search`` expands each alternative's own space ``num_samples`` times; ``choice`` draws one alternative per
    sample (seeded by the stage's identity), then its space once. Points of different alternatives never share a
    key (the point holds its technique)."""
    import hashlib

    import numpy as np

    from squeeze.driver.points import grid_size

    alts = alternatives(sweep)
    subs = [(alt, param_space(alternative(sweep, alt))) for alt in alts]
    for alt, space in subs:
        space[KEY] = alt
    if sampler(sweep) == "grid_search":
        plan = [(space, sweep.num_samples, f"{ident}/{'+'.join(alt)}") for alt, space in subs]
    else:
        rng = np.random.default_rng(int(hashlib.sha256(ident.encode()).hexdigest()[:15], 16))
        plan = [(subs[int(rng.integers(len(subs)))][1], 1, f"{ident}/{i}") for i in range(sweep.num_samples)]
    out, seen, asked = [], set(), 0
    for space, n, seed in plan:
        asked += n * grid_size(space)
        for p in expand(space, n, seed):
            if p["key"] not in seen:
                seen.add(p["key"])
                out.append(p)
    return out, asked


def max_trials(sweep: SweepCfg, grid_of) -> int:
    """Trials grid/random search makes at most (each alternative's grid, ``num_samples`` times)."""
    sizes = [grid_of(space_for(sweep.search_space, sweep.technique, alt)) for alt in alternatives(sweep)]
    return sweep.num_samples * (sum(sizes) if not searched(sweep) or sampler(sweep) == "grid_search" else max(sizes))


def resolve(sweep: SweepCfg, point: dict[str, Any]) -> SweepCfg:
    """The stage as the sweep of the alternative ``point`` runs (itself when it does not search the technique)."""
    if not searched(sweep):
        return sweep
    alt = point.get(KEY)
    if alt not in alternatives(sweep):
        raise ValueError(f"point {point.get('key')}: technique {alt!r} is not one of the stage's alternatives")
    return alternative(sweep, alt)
