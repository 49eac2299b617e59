"""The one Ray Tune trainable: it adapts a ``Recipe`` (the trial's science) to Ray and MLflow.

The only ``tune.report`` is here. A trial is one point of the stage (``squeeze.driver.points``): its MLflow child run
is named by the point's key, so a retried trial, or the same point started by a later driver, continues that
run. Each epoch writes a checkpoint to the stage's storage (``squeeze.driver.point_store``) and records its digest in
the run; a restarted trial resumes from the checkpoint recorded there, and from nothing else. The run follows
the trial: FINISHED at the end (its checkpoints deleted), FINISHED and tagged ``squeeze.stopped_early`` when a
scheduler stopped it between epochs (``squeeze.driver.search.schedulers``), FAILED with the reason when anything raises. The config arrives validated from the driver
and is never validated again here (no file-system checks on a node that may not hold the files).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from squeeze import tracking
from squeeze.console import describe
from squeeze.config import SweepCfg
from squeeze.driver.point_store import CHECKPOINT_TAG, PointStore
from squeeze.driver.search.build import POINT_TAG
from squeeze.tracking import STOPPED_TAG
from squeeze.prepare import Prepared
from squeeze.recipe import Recipe
from squeeze.registry import technique_label
from squeeze.driver.search_space import resolve_trial


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares: the validated sweep and where to track."""

    sweep: SweepCfg
    tracking_uri: str
    experiment_id: str
    parent_id: str
    cache_dir: str
    stage_dir: str = ""                             # the stage's storage folder (local path or URI)
    checkpoints: int = 2                            # checkpoints_to_keep (0: none, a restarted trial starts over)


def _flat(prefix: str, obj) -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        out.update(_flat(key + ".", v) if isinstance(v, dict) else {key: v})
    return out


def _foreign_data_options(task) -> set[str]:
    """The data options of every other registered task (what this trial must not log)."""
    from squeeze.registry import TASKS, get_task_class

    others = {o for name in TASKS for o in get_task_class(name).data_options}
    return others - set(task.data_options)


def _params(cfg: SweepCfg, prepared: Prepared, source_run: str | None) -> dict:
    """The params that describe the trial: set values only (no "None"), every technique param with its default
    (``dq.backend`` reads ``torch`` when the YAML left it out), only the data options its task reads, and no
    training hyperparameter for a post-training stage that trained nothing (a DQ trial has no learning rate)."""
    from squeeze.driver.overrides import TRAINING_ONLY
    from squeeze.provenance import environment
    from squeeze.registry import get_task
    from squeeze.driver.search_space import technique_params

    task = get_task(cfg.task)
    dump = cfg.model_dump(mode="json", exclude={"search_space", "name"}, exclude_none=True)
    dump["params"] = {t: technique_params(cfg, t).model_dump(mode="json", exclude_none=True) for t in cfg.technique}
    foreign = _foreign_data_options(task)
    dump["data"] = {k: v for k, v in dump["data"].items() if k not in foreign
                    and not (cfg.data.source == "files" and k in ("size",))}
    if not task.uses_eval:
        dump.pop("eval", None)
    if any(c.post_training for c in cfg.technique_classes()):
        dump["train"] = {k: v for k, v in dump["train"].items() if k not in TRAINING_ONLY}
    params = {k: v for k, v in _flat("", dump).items() if v not in ([], {}, "")}
    params.update({"sweep": cfg.name, "technique": technique_label(cfg.technique), "data.name": prepared.data_name,
                   "source_run": source_run or "", **{f"data.n_{k}": v for k, v in prepared.sizes.items()}})
    params.update(environment())
    return params


def _resolve_run_refs(cfg: SweepCfg, uri: str, cache_dir: str) -> SweepCfg:
    """Technique params given as ``runs:/<run id>`` (a PKD teacher) become the downloaded model folder."""
    def resolve(v):
        return tracking.download_model(uri, v[len("runs:/"):], cache_dir) if isinstance(v, str) and v.startswith("runs:/") else v

    return cfg.model_copy(update={"params": {t: {k: resolve(v) for k, v in ps.items()} for t, ps in cfg.params.items()}})


def _restore(recipe: Recipe, store: PointStore, tracker) -> None:
    """Continue from the checkpoint this trial's MLflow run records, when it has one and it is still there."""
    import json
    import logging

    raw = tracker.tag(CHECKPOINT_TAG)
    if not raw:
        return
    try:
        store.load(json.loads(raw), recipe.restore)
    except FileNotFoundError as exc:  # deleted by hand: the trial starts over, and says so
        logging.getLogger(__name__).warning("%s; training from the start", exc)
        tracker.set_tags({"squeeze.restarted": str(exc)})


def _train(recipe: Recipe, tracker, store: PointStore, checkpoints: int) -> tuple[int, float] | None:
    """The epochs, each logged, checkpointed and reported; when a scheduler stopped the trial, the epoch it stopped
    after and the time of that epoch's report, else None."""
    import json
    import time

    from ray import tune

    for res in recipe.fit():
        metrics = {**recipe.epoch_metrics(res), **recipe.size_now()}
        tracker.log_metrics(metrics, step=res.epoch)
        if checkpoints:
            record = store.save(recipe.save_checkpoint, res.epoch)
            tracker.set_tags({CHECKPOINT_TAG: json.dumps(record)})  # recorded before the older ones go
            store.prune()
        reported = time.monotonic()
        try:
            tune.report({**metrics, "epoch": res.epoch, "epochs_done": res.epoch + 1, "step": res.step})
        except SystemExit:  # Tune ended the trial: a scheduler's stop (it tagged the run first), or Ctrl-C
            if not tracker.tag(STOPPED_TAG):
                raise
            return res.epoch, reported
    return None


def run_trial(config: dict, prepared: Prepared, context: TrialContext) -> None:
    """Ray Tune function trainable (see ``sweep.build_tuner``)."""
    import json

    import ray
    from ray import tune

    import os

    # a scheduler's stop ends this function from inside tune.report; Tune reuses the actor only if the function has
    # returned within this many seconds (its default, 2, is shorter than closing an MLflow run on a busy machine, and
    # the next trial on the actor then fails)
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    point = config["point"]
    cfg = resolve_trial(context.sweep, point)
    source_run = point.get("source_run")
    tracker = tracking.TrialRun(context.tracking_uri, context.experiment_id, context.parent_id, point["key"],
                                name=f"{cfg.name} {describe(point)}",
                                tags={**tracking.trial_tags(cfg), POINT_TAG: json.dumps(point, sort_keys=True)})
    store = PointStore(context.stage_dir, point["key"], keep=context.checkpoints)
    try:
        tracker.log_params(_params(cfg, prepared, source_run))
        tracker.log_datasets(prepared.data_name, prepared.key, prepared.data_name, prepared.sizes)
        tracker.set_tags({"ray.node_id": ray.get_runtime_context().get_node_id(),
                          "ray.trial_id": tune.get_context().get_trial_id() or "local"})
        uri, cache = context.tracking_uri, context.cache_dir
        source_dir = tracking.download_model(uri, source_run, cache) if source_run else None
        recipe = Recipe(_resolve_run_refs(cfg, uri, cache), prepared, cache_dir=cache, source_dir=source_dir,
                        source_id=source_run, log_metrics=tracker.log_metrics)
        _restore(recipe, store, tracker)
        stopped = _train(recipe, tracker, store, context.checkpoints)
        if stopped is not None:
            costs, tags = recipe.stopped_costs(until=stopped[1])
            tracker.log_metrics(costs, step=stopped[0])
            tracker.set_tags(tags)
            tracker.finish()  # FINISHED, tagged stopped early: done, never run again, never a source
            store.clear()
        else:
            with tempfile.TemporaryDirectory() as tmp:
                final = recipe.finish(tmp)
                tracker.set_tags(final.tags)
                tracker.log_series("power/gpu_w", final.power_trace)
                tracker.log_metrics(final.metrics, step=recipe.loop.state.epoch)
                for sub in ("model", "predictions", "config"):
                    tracker.log_artifacts(final.out / sub, sub)
    except BaseException as exc:
        tracker.fail(exc)
        raise
    if stopped is not None:  # Tune's stop, carried out: returning instead would make Tune's wrapper report once more
        raise SystemExit(0)  # and wait for an answer that never comes
    tracker.finish()
    store.clear()  # the model is in MLflow: nothing will resume from the checkpoints
    tune.report({**final.metrics, "epoch": recipe.loop.state.epoch})
