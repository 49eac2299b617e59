"""The search space: Ray Tune sampler syntax in the YAML, checked value by value, -> ``param_space``.

A ``search_space`` key is a train field (``lr``, ``seed`` ...) or ``<technique>.<param>``
(``pkd.alpha``; a plug-in technique as ``pkg.mod:Class.param`` or by the ``name`` it declares);
its value is one sampler, ``{grid_search: [...]}``, ``{loguniform: [1e-5, 1e-3]}``. Every value a
sampler can produce is validated against the field before Ray starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from pydantic import ValidationError

if TYPE_CHECKING:
    from squeeze.config import SweepCfg

# Ray Tune sampler names -> number of positional arguments they take (None: a list of values).
SAMPLERS: dict[str, Optional[tuple[int, ...]]] = {
    "grid_search": None,
    "choice": None,
    "uniform": (2,),
    "quniform": (3,),
    "loguniform": (2, 3),
    "qloguniform": (3, 4),
    "randn": (2,),
    "qrandn": (3,),
    "randint": (2,),
    "qrandint": (3,),
    "lograndint": (2, 3),
    "qlograndint": (3, 4),
}


def technique_params_of(name: str, values: dict, where: str, context: dict | None = None):
    """The technique's validated ``Params`` (``context``: the driver's validation context, see config)."""
    from squeeze.registry import get_technique_class

    from squeeze.fields import refuse_bool_numbers

    params_cls = get_technique_class(name).Params
    try:
        refuse_bool_numbers(params_cls, values)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None
    try:
        return params_cls.model_validate(values, context=context)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = ".".join(map(str, e["loc"]))
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        raise ValueError(f"{where}.{field}: {msg}") from None


def canonical_technique(name: str, techniques: list[str]) -> str:
    """The entry of ``techniques`` that ``name`` means: itself, or the one whose class declares ``name``."""
    from squeeze.registry import get_technique_class

    if name in techniques:
        return name
    declared = {getattr(get_technique_class(t), "name", t): t for t in techniques}
    return declared.get(name, name)


def split_key(key: str, techniques: list[str]) -> tuple[str | None, str]:
    """``("pkd", "alpha")`` for ``pkd.alpha``, ``("pkg.mod:Cls", "p")`` for ``pkg.mod:Cls.p``, ``(None, "lr")`` for ``lr``."""
    if ":" in key:
        module, _, rest = key.partition(":")
        cls, dot, field = rest.partition(".")
        return (f"{module}:{cls}", field) if dot else (None, key)
    tech, dot, field = key.partition(".")
    return (canonical_technique(tech, techniques), field) if dot else (None, key)


def check_entry(key: str, spec: Any, sweep: SweepCfg, context: dict | None = None) -> None:
    if key == "max_length":
        raise ValueError("search_space.max_length: not tunable (data is tokenized once per sweep); make it a separate sweep")
    tech, field = split_key(key, sweep.technique)
    train_cls = type(sweep.train)
    if tech is not None:
        if tech not in sweep.technique:
            where = ("any alternative of search_space.technique" if "technique" in sweep.search_space
                     else "this sweep's technique list")
            raise ValueError(f"search_space.{key}: technique {tech!r} is not in {where} {sweep.technique}")
    elif key not in train_cls.model_fields:
        raise ValueError(f"search_space.{key}: not a tunable field; allowed: {', '.join(train_cls.model_fields)}, "
                         "or <technique>.<param>")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"search_space.{key}: expected one sampler like {{grid_search: [...]}}; allowed: {', '.join(SAMPLERS)}")
    (sampler, args), = spec.items()
    if sampler not in SAMPLERS:
        raise ValueError(f"search_space.{key}: unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if not isinstance(args, list) or not args:
        raise ValueError(f"search_space.{key}.{sampler}: expected a non-empty list, got {args!r}")
    arity = SAMPLERS[sampler]
    if sampler == "grid_search":
        import json

        seen = [json.dumps(a, sort_keys=True, default=str) for a in args]
        twice = next((a for a, t in zip(args, seen) if seen.count(t) > 1), None)
        if twice is not None:  # the same trial twice: the same computation, and one result counted twice
            raise ValueError(f"search_space.{key}.grid_search: lists {twice!r} twice")
    if arity is None:
        values = args
    else:
        if len(args) not in arity:
            raise ValueError(f"search_space.{key}.{sampler}: takes {' or '.join(map(str, arity))} arguments, got {len(args)}")
        _check_range(key, sampler, args, _field_info(sweep, tech, field or key))
        values = args[:2] if not sampler.endswith("randn") else []
    for value in values:
        if tech is not None:
            try:
                technique_params_of(tech, {**sweep.params.get(tech, {}), field: value}, f"search_space.{tech}", context)
            except ValueError as exc:
                raise ValueError(f"{exc} (value {value!r} of {sampler})") from None
            continue
        try:
            train_cls.model_validate({**sweep.train.model_dump(), key: value})
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            raise ValueError(f"search_space.{key}.{sampler}: value {value!r} is invalid: {msg}") from None


INT_SAMPLERS = ("randint", "qrandint", "lograndint", "qlograndint")


def _field_info(sweep: SweepCfg, tech: str | None, field: str):
    from squeeze.registry import get_technique_class

    fields = type(sweep.train).model_fields if tech is None else get_technique_class(tech).Params.model_fields
    return fields.get(field)


def _lower_bound(info) -> float | None:
    for m in getattr(info, "metadata", []):
        for attr in ("gt", "ge"):
            if getattr(m, attr, None) is not None:
                return getattr(m, attr)
    return None


def _check_range(key: str, sampler: str, args: list, info) -> None:
    """What a range sampler can draw must fit the field: every number finite, integers for an integer field,
    positive bounds for a log scale, a positive quantum, and no unbounded normal draw for a bounded field."""
    where = f"search_space.{key}.{sampler}"
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and a == a and abs(a) != float("inf") for a in args):
        raise ValueError(f"{where}: arguments must be finite numbers, got {args}")
    if sampler.endswith("randn"):
        if args[1] <= 0:
            raise ValueError(f"{where}: the standard deviation must be positive, got {args[1]}")
    elif not args[0] < args[1]:
        raise ValueError(f"{where}: lower bound {args[0]} must be below upper {args[1]}")
    if "log" in sampler and args[0] <= 0:
        raise ValueError(f"{where}: a log-scale sampler needs a positive lower bound, got {args[0]}")
    if sampler.startswith("q") and args[2] <= 0:
        raise ValueError(f"{where}: the quantum q must be positive, got {args[2]}")
    if sampler.startswith("q") and not sampler.endswith("randn"):
        off = [b for b in args[:2] if abs(b / args[2] - round(b / args[2])) > 1e-9]
        if off:  # Ray Tune refuses such bounds inside the driver's loop, after the trials started
            raise ValueError(f"{where}: bound {off[0]} is not a multiple of the quantum q={args[2]}")
    if info is not None and info.annotation is int and sampler not in INT_SAMPLERS:
        raise ValueError(f"{where}: draws non-integers; {key} takes integers: use {', '.join(INT_SAMPLERS)} or a grid")
    if info is not None and sampler.endswith("randn") and _lower_bound(info) is not None:
        raise ValueError(f"{where}: a normal draw can go below {key}'s lower bound {_lower_bound(info)}; use a bounded "
                         "sampler (uniform, loguniform)")


def param_space(sweep: SweepCfg) -> dict[str, Any]:
    """Translate the YAML search space into Ray Tune's ``param_space``.

    ``lr`` goes to ``{"train": {"lr": ...}}``, ``pkd.alpha`` to ``{"params": {"pkd": {"alpha": ...}}}``.
    """
    from ray import tune

    space: dict[str, Any] = {"train": {}, "params": {}}
    for key, spec in sweep.search_space.items():
        if key == "technique":  # a searched technique: each alternative's space (``squeeze.driver.search.alternatives``)
            raise ValueError("param_space: a stage that searches its technique expands per alternative")
        (sampler, args), = spec.items()
        value = getattr(tune, sampler)(list(args)) if SAMPLERS[sampler] is None else getattr(tune, sampler)(*args)
        tech, field = split_key(key, sweep.technique)
        if tech is not None:
            space["params"].setdefault(tech, {})[field] = value
        else:
            space["train"][key] = value
    return space


def resolve_trial(sweep: SweepCfg, sampled: dict[str, Any]) -> SweepCfg:
    """The sweep with one trial's sampled values filled in (only they are validated again: no file-system checks);
    a stage that searches its technique becomes the sweep of the alternative the point runs."""
    from squeeze.driver.search.alternatives import resolve

    sampled = sampled or {}
    sweep = resolve(sweep, sampled)
    train = type(sweep.train).model_validate({**sweep.train.model_dump(), **(sampled.get("train") or {})})
    params = {t: {**sweep.params.get(t, {}), **(sampled.get("params") or {}).get(t, {})} for t in sweep.technique}
    params = {t: v for t, v in params.items() if v}
    return sweep.model_copy(update={"train": train, "params": params})


def technique_params(sweep: SweepCfg, name: str):
    """The validated Params object of one technique of a (resolved) sweep."""
    return technique_params_of(name, sweep.params.get(name, {}), f"params.{name}")


def _values(spec: dict) -> list:
    """The values a sampler can produce that a check must try: every listed value, or a range's two bounds."""
    (sampler, args), = spec.items()
    if SAMPLERS[sampler] is None:
        return list(args)
    return [] if sampler.endswith("randn") else list(args[:2])


def points(sweep: SweepCfg, technique: str) -> list[tuple[Any, Any]]:
    """(train config, technique Params) for every combination of the searched values of the train fields and of
    ``technique``'s params: what a driver-side check (a prune schedule) must pass for every trial."""
    from itertools import product

    train_space, tech_space = {}, {}
    for key, spec in sweep.search_space.items():
        if key == "technique":
            continue
        tech, field = split_key(key, sweep.technique)
        if _values(spec) and tech is None:
            train_space[key] = _values(spec)
        elif _values(spec) and tech == technique:
            tech_space[field] = _values(spec)
    out = []
    for combo in product(*train_space.values(), *tech_space.values()):
        t = dict(zip(train_space, combo[:len(train_space)]))
        p = dict(zip(tech_space, combo[len(train_space):]))
        train = type(sweep.train).model_validate({**sweep.train.model_dump(), **t})
        out.append((train, technique_params_of(technique, {**sweep.params.get(technique, {}), **p}, f"params.{technique}")))
    return out
