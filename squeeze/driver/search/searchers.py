"""One Ray Tune ``Searcher`` per stage: it hands out the stage's points and stops when the budget is spent.

``grid`` / ``random``: the points ``squeeze.driver.points`` expanded on the driver (the same keys on every driver).
``tpe`` / ``nsga2``: Optuna's samplers, asked and told directly (Optuna's ask-and-tell API). Ray's
``OptunaSearch`` would do the same, but its warm start writes a multi-objective result as one value
(``create_trial(value=...)``, Ray 2.60), and a resumed search must start from the trials that finished. Each
drawn configuration becomes a point with its key, so a resumed stage finds its runs by key like a grid's; the
trials of earlier drivers are told to Optuna before it draws, and a draw that repeats a known point is told
that point's result instead of running it again.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ray.tune.search import Searcher

from squeeze.driver.points import key as point_key
from squeeze.driver.search.alternatives import KEY, alternatives
from squeeze.driver.search.budget import Meter

log = logging.getLogger(__name__)
REDRAWS = 50  # draws that repeat known points before the space counts as exhausted
from squeeze.driver.search.spec import NO_OPTUNA as UNSUPPORTED  # refused when the config is read


class StageSearcher(Searcher):
    def __init__(self, meter: Meter, points: list[dict] | None = None, draws: "OptunaDraws | None" = None,
                 total: int = 0):
        super().__init__()
        self.meter, self.draws = meter, draws
        self._points = list(points or [])
        self._left = total if draws is not None else len(self._points)
        self._keys: dict[str, str] = {}
        self.stopped_by: str | None = None

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the points carry their own space; objectives were given to the draws

    def suggest(self, trial_id: str):
        why = self.meter.spent()
        if why or self._left <= 0:
            self.stopped_by = self.stopped_by or why
            return Searcher.FINISHED
        point = self._points.pop(0) if self.draws is None else self.draws.ask(trial_id)
        if point is None:
            return Searcher.FINISHED
        self._left -= 1
        self._keys[trial_id] = point["key"]
        self.meter.start(point["key"])
        return {"point": point}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self._keys.pop(trial_id, None)
        if key is None:
            return
        self.meter.end(key, result)
        if self.draws is not None:
            self.draws.tell(trial_id, key, result, error)


def distributions(sweep, sources: list[str] | None) -> dict[str, Any]:
    """The search space as Optuna distributions, keyed by the point's path (``train/lr``, ``params/pkd/alpha``).

    Ray's bounds carry over: ``randint(a, b)`` draws a <= x < b (Optuna's IntDistribution is inclusive), ``grid_search``
    and ``choice`` become categorical; values Optuna cannot hold (lists, dicts) travel as JSON text."""
    import optuna.distributions as od

    from squeeze.registry import technique_label
    from squeeze.driver.search_space import split_key

    out: dict[str, Any] = {}
    for key, spec in sweep.search_space.items():
        if key == KEY:
            out[KEY] = od.CategoricalDistribution([technique_label(a) for a in alternatives(sweep)])
            continue
        (sampler, args), = spec.items()
        tech, field = split_key(key, sweep.technique)
        path = f"params/{tech}/{field}" if tech is not None else f"train/{key}"
        if sampler in UNSUPPORTED:
            raise ValueError(f"search_space.{key}.{sampler}: {UNSUPPORTED[sampler]} has no Optuna distribution; "
                             "use uniform, loguniform, quniform, randint, qrandint, lograndint, choice or grid_search")
        if sampler in ("grid_search", "choice"):
            out[path] = od.CategoricalDistribution([_plain(v) for v in args])
        elif sampler in ("uniform", "quniform"):
            out[path] = od.FloatDistribution(args[0], args[1], step=args[2] if sampler == "quniform" else None)
        elif sampler == "loguniform":
            out[path] = od.FloatDistribution(args[0], args[1], log=True)
        elif sampler == "randint":
            out[path] = od.IntDistribution(int(args[0]), int(args[1]) - 1)
        elif sampler == "qrandint":
            out[path] = od.IntDistribution(int(args[0]), int(args[1]), step=int(args[2]))
        elif sampler == "lograndint":
            out[path] = od.IntDistribution(int(args[0]), int(args[1]) - 1, log=True)
    if sources:
        out["source_run"] = od.CategoricalDistribution(list(sources))
    return out


def _plain(v):
    return v if v is None or isinstance(v, (bool, int, float, str)) else "json:" + json.dumps(v, sort_keys=True)


def _value(v):
    return json.loads(v[5:]) if isinstance(v, str) and v.startswith("json:") else v


def to_point(params: dict[str, Any], space_paths, recipes: dict[str, list] | None = None) -> dict:
    """Optuna's params -> a point shaped like ``squeeze.driver.points.expand``'s, with its key (``recipes``: a searched
    technique's alternatives by label)."""
    point: dict[str, Any] = {"train": {}, "params": {}}
    for path in space_paths:
        value = _value(params[path])
        parts = path.split("/")
        if path == KEY:
            point[KEY] = list(recipes[value])
        elif parts[0] == "train":
            point["train"][parts[1]] = value
        elif parts[0] == "params":
            point["params"].setdefault(parts[1], {})[parts[2]] = value
        else:
            point["source_run"] = value
    point["key"] = point_key(point)
    return point


def from_point(point: dict) -> dict[str, Any]:
    from squeeze.registry import technique_label

    out = {f"train/{k}": _plain(v) for k, v in (point.get("train") or {}).items()}
    if point.get(KEY):
        out[KEY] = technique_label(point[KEY])
    out.update({f"params/{t}/{k}": _plain(v) for t, ps in (point.get("params") or {}).items() for k, v in ps.items()})
    if point.get("source_run"):
        out["source_run"] = point["source_run"]
    return out


class OptunaDraws:
    """An Optuna study asked for points and told their objectives."""

    def __init__(self, space: dict, metrics: list[str], modes: list[str], algorithm: str, seed: int,
                 population: int = 0, recipes: dict[str, list] | None = None):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if algorithm == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, population or 50))
        else:
            # random draws before TPE models: Optuna's 10, or a quarter of a smaller search (at least 4), so that a
            # 16-trial search is not mostly random (one or several objectives: MOTPE, Ozaki et al. 2020)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(4, population or 10)))
        self.space, self.metrics, self.recipes = space, metrics, recipes
        self.study = optuna.create_study(sampler=sampler, directions=["maximize" if m == "max" else "minimize"
                                                                       for m in modes])
        self.known: dict[str, list[float] | None] = {}  # point key -> values (None: failed or stopped)
        self.running: set[str] = set()
        self._asked: dict[str, Any] = {}

    def __getstate__(self):  # Tune pickles its config into tuner.pkl, which squeeze never reads back (``stage``)
        return {k: v for k, v in self.__dict__.items() if k not in ("study", "_asked")}

    def values(self, result: dict | None) -> list[float] | None:
        if not result or any(result.get(m) is None or result[m] != result[m] for m in self.metrics):
            return None
        return [float(result[m]) for m in self.metrics]

    def add_known(self, point: dict, result: dict | None, state: str = "COMPLETE") -> None:
        """A trial an earlier driver finished (or that failed): Optuna learns it before drawing."""
        import optuna
        from optuna.trial import TrialState

        params = from_point(point)
        if self.recipes and params.get(KEY) not in self.recipes:
            return
        if set(params) != set(self.paths(params.get(KEY))):
            return  # drawn from another space: not this search's
        values = self.values(result)
        st = TrialState.COMPLETE if values is not None and state == "COMPLETE" else TrialState.FAIL
        self.study.add_trial(optuna.trial.create_trial(params=params, distributions={k: self.space[k] for k in params},
                                                       values=values if st == TrialState.COMPLETE else None, state=st))
        self.known[point["key"]] = values if st == TrialState.COMPLETE else None

    def ask(self, trial_id: str) -> dict | None:
        from optuna.trial import TrialState

        for _ in range(REDRAWS):
            trial = self._draw()
            point = to_point(trial.params, self.paths(trial.params.get(KEY)), self.recipes)
            if point["key"] in self.known and self.known[point["key"]] is not None:
                self.study.tell(trial, self.known[point["key"]])  # a repeat: its result, not a second run
                continue
            if point["key"] in self.known or point["key"] in self.running:
                self.study.tell(trial, state=TrialState.PRUNED)
                continue
            self._asked[trial_id] = trial
            self.running.add(point["key"])
            return point
        log.warning("Optuna drew %d known points in a row: the space is exhausted", REDRAWS)
        return None

    def paths(self, recipe: str | None = None) -> list[str]:
        """The space's paths a trial of ``recipe`` draws: all of them, or, when the technique is searched, the
        technique and the keys that apply to that alternative (conditional parameters)."""
        if not self.recipes:
            return list(self.space)
        from squeeze.driver.search.alternatives import applies

        alt = self.recipes[recipe]
        out = [KEY]
        for path in self.space:
            parts = path.split("/")
            if (parts[0] == "train" and applies(None, parts[1], alt)) or (parts[0] == "params" and parts[1] in alt) \
                    or parts[0] == "source_run":
                out.append(path)
        return out

    def _draw(self):
        """One Optuna trial: the fixed space, or the technique first and then only what applies to it (Optuna's
        define-by-run space: TPE and NSGA-II model each parameter where it was drawn)."""
        if not self.recipes:
            return self.study.ask(fixed_distributions=self.space)
        trial = self.study.ask()
        recipe = trial.suggest_categorical(KEY, self.space[KEY].choices)
        for path in self.paths(recipe)[1:]:
            _suggest(trial, path, self.space[path])
        return trial

    def tell(self, trial_id: str, key: str, result: dict | None, error: bool) -> None:
        from optuna.trial import TrialState

        trial = self._asked.pop(trial_id, None)
        self.running.discard(key)
        if trial is None:
            return
        values = None if error or (result or {}).get("parity/ok") is None else self.values(result)
        if values is None:  # failed, or stopped early by a scheduler (no final result)
            self.study.tell(trial, state=TrialState.FAIL if error else TrialState.PRUNED)
        else:
            self.study.tell(trial, values)
        self.known[key] = values


def _suggest(trial, name: str, dist):
    """Draw ``name`` from ``dist`` through the trial's public API."""
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, od.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
