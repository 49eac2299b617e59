"""A stage's search, built on the driver from its config and its MLflow runs: searcher, scheduler, budget meter."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

from squeeze.registry import technique_label
from squeeze.driver.search.alternatives import alternatives, searched
from squeeze.driver.search.budget import Meter, spent_before
from squeeze.driver.search.schedulers import Asha, MoAsha
from squeeze.driver.search.searchers import OptunaDraws, StageSearcher, distributions

POINT_TAG = "squeeze.point"  # a trial run's point as JSON: what a resumed adaptive search re-runs or learns from


@dataclass
class StageSearch:
    searcher: StageSearcher
    scheduler: object | None
    num_samples: int                     # trials Tune may start now
    planned: int                         # the stage's trials in all, those of earlier drivers included
    keys: set = field(default_factory=set)  # the keys of a grid's points (empty for an adaptive search)
    rerun: list = field(default_factory=list)  # an adaptive search's interrupted points, run again first

    @property
    def stopped_by(self) -> str | None:
        return self.searcher.stopped_by

    def was_stopped(self, result) -> bool:
        tid = (result.metrics or {}).get("trial_id")
        return self.scheduler is not None and tid in getattr(self.scheduler, "stopped", {})

    def close_stopped(self, results, close: Callable[[str, str], None], wait_s: float = 10.0) -> None:
        """Every trial the scheduler stopped ends FINISHED and tagged, even when its process ended before it could
        close its own run."""
        stopped = getattr(self.scheduler, "stopped", {}) if self.scheduler is not None else {}
        todo = {(r.config or {}).get("point", {}).get("key"): stopped[r.metrics["trial_id"]]
                for r in results if self.was_stopped(r)}
        deadline = time.monotonic() + wait_s
        for key, reason in todo.items():
            if key:
                close(key, reason, deadline)

    def tally(self, runs: dict) -> dict[str, int]:
        from squeeze.tracking import stopped_early

        mine = [r for k, r in runs.items() if not self.keys or k in self.keys]
        stopped = sum(r.info.status == "FINISHED" and stopped_early(r) for r in mine)
        finished = sum(r.info.status == "FINISHED" for r in mine) - stopped
        failed = sum(r.info.status == "FAILED" for r in mine)
        return {"planned": self.planned, "finished": finished, "stopped_early": stopped, "failed": failed,
                "not_run": max(0, self.planned - finished - stopped - failed)}


def build_search(sweep, plan, runs: dict, sources: list[str] | None, meter: Meter,
                 on_stop: Callable[[str, str], None]) -> StageSearch:
    """``plan``: the stage's points split by state (``stage.plan``; empty for tpe/nsga2); ``runs``: its trial runs
    by key. What earlier drivers spent counts against the budget."""
    meter.add_finished(*spent_before(list(runs.values())))
    scheduler = _scheduler(sweep, on_stop)
    algo = sweep.search.algorithm
    if algo in ("grid", "random"):
        keys = {p["key"] for p in plan.todo + plan.finished} | set(plan.failed)
        searcher = StageSearcher(meter, points=plan.todo)
        return StageSearch(searcher, scheduler, len(plan.todo), len(keys), keys)
    objectives = sweep.objective_list()
    recipes = {technique_label(a): a for a in alternatives(sweep)} if searched(sweep) else None
    draws = OptunaDraws(distributions(sweep, sources), [o.metric for o in objectives], [o.mode for o in objectives],
                        algo, sweep.search.seed, population=population(sweep.num_samples), recipes=recipes)
    rerun, done = [], 0
    for key, run in runs.items():
        raw = run.data.tags.get(POINT_TAG)
        point = json.loads(raw) if raw else None
        status, why = run.info.status, run.data.tags.get("squeeze.failure")
        if status == "FINISHED" or (status == "FAILED" and why == "raised"):
            done += 1
            if point is not None:
                draws.add_known(point, run.data.metrics if status == "FINISHED" and "parity/ok" in run.data.metrics
                                else None, "COMPLETE" if status == "FINISHED" else "FAIL")
        elif point is not None:  # interrupted or lost: the same point runs again first
            rerun.append(point)
    left = max(0, sweep.num_samples - done)
    rerun = rerun[:left]
    searcher = StageSearcher(meter, points=rerun, draws=draws, total=left)
    return StageSearch(searcher, scheduler, left, sweep.num_samples, rerun=rerun)


def population(num_samples: int) -> int:
    """NSGA-II's generation size, and TPE's random start up to its default of 10: a quarter of the trials (4 to 50),
    so that a small search evolves at all (Optuna's default of 50 leaves a 20-trial search as a random one)."""
    return min(50, max(4, num_samples // 4))


def _scheduler(sweep, on_stop):
    s = sweep.search
    if s.scheduler == "none":
        return None

    def stop(trial, result, reason):
        on_stop(((trial.config or {}).get("point") or {}).get("key", trial.trial_id), reason)

    epochs = sweep.train.epochs
    if s.scheduler == "mo-asha":
        objectives = sweep.objective_list()
        return MoAsha([o.metric for o in objectives], [o.mode for o in objectives], epochs, s.grace_period,
                      s.reduction_factor, on_stop=stop)
    return Asha(epochs, s.grace_period, s.reduction_factor, brackets=s.brackets if s.scheduler == "hyperband" else 1,
                on_stop=stop)
