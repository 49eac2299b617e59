"""The search section of a sweep, validated once on the driver (``squeeze.config`` calls ``check``).

::

    search: {algorithm: nsga2, scheduler: asha, grace_period: 1, reduction_factor: 3, seed: 0}
    objectives: [{metric: val/accuracy, mode: max}, {metric: size/disk_mb, mode: min}]
    constraints: [{metric: val/accuracy, min_ratio_of_source: 0.99}]
    budget: {trials: 20, hours: 2.0}

Which metric is known when decides where an objective may be used: a scheduler compares trials at each epoch
(``EPOCH``), an adaptive searcher learns from a trial when it ends (every final metric but the CPU latency,
which the driver measures after the sweep, alone), and the front reads every metric.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from squeeze.fields import Strict

ALGORITHMS = ("grid", "random", "tpe", "nsga2")
SCHEDULERS = ("none", "asha", "hyperband", "mo-asha")
# lower is better for every cost a trial logs; the task's own metrics carry their direction
COSTS = ("size/params", "size/nonzero", "size/memory_mb", "size/disk_mb", "size/embeddings_mb", "size/rest_mb",
         "latency/cpu_ms_per_example", "latency/cpu_p90_ms_per_example", "latency/cpu_test_set_s",
         "latency/gpu_ms_per_example", "latency/gpu_p90_ms_per_example", "latency/gpu_test_set_s",
         "energy/total_kwh", "energy/gpu_kwh", "energy/cpu_kwh", "co2/kg", "time/train_s", "time/eval_s")
EPOCH_COSTS = ("size/params", "size/nonzero", "time/epoch_train_s")  # reported by a trial after every epoch
AFTER_SWEEP = ("latency/cpu_",)
NO_OPTUNA = {"randn": "a normal draw", "qrandn": "a normal draw", "qloguniform": "a quantized log scale",
             "qlograndint": "a quantized log scale"}  # measured by the driver once the stage's trials ended


class Search(Strict):
    algorithm: Literal["grid", "random", "tpe", "nsga2"] = Field(
        "grid", description="grid / random: squeeze's own points (every grid combination times num_samples, range "
                            "samplers drawn at random); tpe / nsga2: Optuna's samplers, num_samples trials (tpe "
                            "with several objectives is Optuna's multi-objective TPE, MOTPE)")
    scheduler: Literal["none", "asha", "hyperband", "mo-asha"] = Field(
        "none", description="early stopping on epochs: asha and hyperband (asynchronous, Ray Tune) on the first "
                            "objective; mo-asha on all objectives")
    grace_period: int = Field(1, ge=1, le=10_000, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(3.0, gt=1, le=100, description="a rung keeps the best 1/reduction_factor")
    brackets: int = Field(3, ge=1, le=10, description="hyperband only: brackets of different grace periods")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the Optuna sampler's seed")


class Objective(Strict):
    metric: str
    mode: Literal["min", "max"]


class Constraint(Strict):
    metric: str
    min: Optional[float] = None
    max: Optional[float] = None
    min_ratio_of_source: Optional[float] = Field(None, gt=0, description="at least this fraction of the source "
                                                 "trial's value of the metric (0.99: within 1%)")
    max_ratio_of_source: Optional[float] = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_bound(self):
        set_ = [k for k in ("min", "max", "min_ratio_of_source", "max_ratio_of_source") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"give exactly one of min, max, min_ratio_of_source, max_ratio_of_source, got "
                             f"{', '.join(set_) or 'none'}")
        return self

    def bound(self) -> tuple[str, float]:
        return next((k, getattr(self, k)) for k in ("min", "max", "min_ratio_of_source", "max_ratio_of_source")
                    if getattr(self, k) is not None)


class Budget(Strict):
    trials: Optional[int] = Field(None, ge=1, le=100_000, description="trials started (finished ones of an earlier "
                                                                     "run of the same stage count)")
    hours: Optional[float] = Field(None, gt=0, description="trial-hours: the wall time of the trials, summed")
    kwh: Optional[float] = Field(None, gt=0, description="energy/total_kwh of the finished trials, summed (needs NVML "
                                                         "or RAPL counters)")

    @model_validator(mode="after")
    def _some(self):
        if self.trials is None and self.hours is None and self.kwh is None:
            raise ValueError("name at least one of trials, hours, kwh")
        return self


def metric_direction(metric: str, task) -> str | None:
    """The direction a metric improves in, None when no trial logs it."""
    if metric.startswith("val/") and metric[4:] in task.metrics:
        return task.metrics[metric[4:]]
    return "min" if metric in COSTS or metric in EPOCH_COSTS else None


def check(sweep, task) -> list[Objective]:
    """The sweep's objectives (default: the task's primary metric), refused where they cannot be used.

    Raises:
        ValueError: naming the field (``objectives.1.metric``, ``search.scheduler`` ...) and what is allowed.
    """
    objectives = sweep.objectives or [Objective(metric=f"val/{task.primary_metric}", mode=task.mode)]
    known = list(dict.fromkeys([f"val/{m}" for m in task.metrics] + list(COSTS) + list(EPOCH_COSTS)))
    for i, o in enumerate(objectives):
        if o.metric.startswith("test/"):
            raise ValueError(f"objectives.{i}.metric: {o.metric} would choose on the test set; use val/{o.metric[5:]}")
        direction = metric_direction(o.metric, task)
        if direction is None:
            raise ValueError(f"objectives.{i}.metric: {o.metric!r} is not a metric a {sweep.task} trial logs; "
                             f"allowed: {', '.join(known)}")
        if o.mode != direction:
            raise ValueError(f"objectives.{i}.mode: {o.metric} is better when {'higher' if direction == 'max' else 'lower'}"
                             f" (mode {direction}), got {o.mode}")
    names = [o.metric for o in objectives]
    if len(set(names)) != len(names):
        raise ValueError(f"objectives: {next(n for n in names if names.count(n) > 1)} is listed twice")
    for i, c in enumerate(sweep.constraints):
        if metric_direction(c.metric, task) is None:
            raise ValueError(f"constraints.{i}.metric: {c.metric!r} is not a metric a {sweep.task} trial logs; "
                             f"allowed: {', '.join(known)}")
        if c.bound()[0].endswith("_of_source") and sweep.source is None:
            raise ValueError(f"constraints.{i}.{c.bound()[0]}: this sweep has no source to compare with; use min or max")
    _check_algorithm(sweep, objectives)
    _check_scheduler(sweep, objectives)
    return objectives


def _check_algorithm(sweep, objectives) -> None:
    algo = sweep.search.algorithm
    if algo == "nsga2" and len(objectives) < 2:
        raise ValueError("search.algorithm: nsga2 searches several objectives; list at least two under `objectives` "
                         "(or use tpe, which takes one or several)")
    if algo in ("tpe", "nsga2"):
        late = [o.metric for o in objectives if o.metric.startswith(AFTER_SWEEP)]
        if late:
            raise ValueError(f"objectives: {late[0]} is measured by the driver after the stage's trials ended (alone on "
                             f"the CPU), too late for {algo} to learn from; search on size/* or latency/gpu_*, or use "
                             "grid or random search (the front includes CPU latency)")
        if not sweep.search_space:
            raise ValueError(f"search.algorithm: {algo} needs a search_space to draw from")
        for key, spec in sweep.search_space.items():
            sampler = next(iter(spec))
            if sampler in NO_OPTUNA:
                raise ValueError(f"search_space.{key}.{sampler}: {NO_OPTUNA[sampler]} has no Optuna distribution "
                                 f"({algo}); use uniform, loguniform, quniform, randint, qrandint, lograndint, choice or "
                                 "grid_search")
    if algo in ("grid", "random") and sweep.search.seed != 0:
        raise ValueError("search.seed: seeds Optuna's sampler (tpe, nsga2); grid and random points are drawn from the "
                         "stage's identity")


def _check_scheduler(sweep, objectives) -> None:
    sched = sweep.search.scheduler
    if sched == "none":
        return
    post = [t for t, c in zip(sweep.technique, sweep.technique_classes()) if c.post_training]
    if post:
        raise ValueError(f"search.scheduler: {sched} stops trials between epochs; technique {post[0]!r} is post-training "
                         "(no epochs): use scheduler none")
    epochs = sweep.train.epochs
    if sweep.search.grace_period >= epochs:
        raise ValueError(f"search.grace_period: {sweep.search.grace_period} epochs leaves nothing to stop in "
                         f"train.epochs {epochs}; make it smaller than train.epochs")
    per_epoch = [o.metric for o in objectives if not (o.metric.startswith("val/") or o.metric in EPOCH_COSTS)]
    used = objectives if sched == "mo-asha" else objectives[:1]
    late = [m for m in per_epoch if m in {o.metric for o in used}]
    if late:
        raise ValueError(f"search.scheduler: {sched} compares trials after each epoch, and {late[0]} is known only when "
                         f"a trial ends; per-epoch objectives: val/<metric>, {', '.join(EPOCH_COSTS)}")
    if sched == "mo-asha" and len(objectives) < 2:
        raise ValueError("search.scheduler: mo-asha stops trials on several objectives; list at least two under "
                         "`objectives` (or use asha)")
