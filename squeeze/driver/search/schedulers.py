"""Early stopping between epochs: Ray Tune's ASHA and asynchronous HyperBand, and MO-ASHA for several objectives.

Each scheduler here marks the trials it stops (``on_stop``: the driver tags the trial's MLflow run before the
trial is told to stop, so the trial closes its run as stopped early, not as interrupted) and never stops a trial
at or after its last epoch: that trial has only its evaluation and saved model left, which the stop would lose.

MO-ASHA (Schmucker et al. 2021, "Multi-objective multi-fidelity hyperparameter optimization with application
to fairness"; Salinas et al. 2021): asynchronous successive halving where a rung ranks the trials it has seen by
non-dominated sorting (fronts; within a front an epsilon-net from the best first objective, as Syne Tune's
MOASHA), and a trial reaching the rung continues only when its position among the n trials recorded there
(itself included) is below n / reduction_factor: the best 1/eta, the rule of ASHA (Li et al. 2020) and Ray's.
No maintained library offers it as a Ray Tune scheduler (Syne Tune's runs on Syne Tune's own backend).
"""

from __future__ import annotations

import math
from typing import Callable

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from squeeze.driver.search.front import costs, rank

TIME_ATTR = "epochs_done"  # epochs a trial has trained, reported after each (squeeze.driver.trial)
OnStop = Callable[[object, dict, str], None]  # (trial, result, reason)


class _Marking:
    """Mixin: never stop at the last epoch or on the final result; tell ``on_stop`` about every stop."""

    def _setup_marking(self, name: str, epochs: int, on_stop: OnStop | None):
        self._name, self._epochs, self._on_stop = name, epochs, on_stop
        self.stopped: dict[str, str] = {}  # trial id -> reason

    def _decide(self, trial, result: dict, decision: str) -> str:
        epoch = result.get(TIME_ATTR)
        if decision != TrialScheduler.STOP or epoch is None or "parity/ok" in result or epoch >= self._epochs:
            return TrialScheduler.CONTINUE if decision == TrialScheduler.STOP else decision
        reason = f"stopped early by {self._name} after epoch {epoch:g} of {self._epochs}"
        self.stopped[trial.trial_id] = reason
        if self._on_stop is not None:
            self._on_stop(trial, result, reason)
        return decision


class Asha(_Marking, AsyncHyperBandScheduler):
    """Ray Tune's asynchronous successive halving (``brackets=1``) or asynchronous HyperBand (``brackets>1``), on
    the epochs a trial has trained; metric and mode come from the ``TuneConfig``."""

    def __init__(self, epochs: int, grace_period: int, reduction_factor: float, brackets: int = 1,
                 on_stop: OnStop | None = None):
        super().__init__(time_attr=TIME_ATTR, max_t=epochs, grace_period=grace_period,
                         reduction_factor=reduction_factor, brackets=brackets)
        self._setup_marking("hyperband" if brackets > 1 else "asha", epochs, on_stop)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._decide(trial, result, super().on_trial_result(tune_controller, trial, result))


class MoAsha(_Marking, FIFOScheduler):
    """Multi-objective asynchronous successive halving on the epochs trained, one bracket (module docstring)."""

    def __init__(self, metrics: list[str], modes: list[str], epochs: int, grace_period: int,
                 reduction_factor: float, on_stop: OnStop | None = None):
        super().__init__()
        self._metrics, self._modes, self._rf = list(metrics), list(modes), reduction_factor
        milestones, m = [], float(grace_period)
        while m < epochs:
            milestones.append(m)
            m *= reduction_factor
        self.rungs: list[tuple[float, dict]] = [(m, {}) for m in reversed(milestones)]  # highest first
        self._setup_marking("mo-asha", epochs, on_stop)

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # its objectives are its own; the TuneConfig's metric is the searcher's

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._decide(trial, result, self.decide(trial.trial_id, result))

    def decide(self, trial_id: str, result: dict) -> str:
        """CONTINUE or STOP for a trial's result (records it at the highest rung it reached first)."""
        epoch = result.get(TIME_ATTR)
        if epoch is None or any(m not in result for m in self._metrics):
            return TrialScheduler.CONTINUE
        values = [float(result[m]) for m in self._metrics]
        if any(math.isnan(v) for v in values):
            return TrialScheduler.CONTINUE
        for milestone, recorded in self.rungs:
            if epoch < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = values
            points = costs(list(recorded.values()), self._modes)
            position = rank(points)[list(recorded).index(trial_id)]
            return TrialScheduler.CONTINUE if position < len(recorded) / self._rf else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return "MO-ASHA: " + " | ".join(f"epoch {m:g}: {len(r)} recorded" for m, r in self.rungs)
