"""The one Ray Tune trainable: it adapts a ``Recipe`` (the trial's science) to Ray and MLflow.

The only ``tune.report`` is here. Each epoch reports the dev metrics with a checkpoint; a restarted
trial resumes from ``tune.get_checkpoint()``. The trial's MLflow child run follows it: FINISHED at
the end, FAILED with the reason when anything raises. The config arrives validated from the driver
and is never validated again here (no file-system checks on a node that may not hold the files).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from squeeze import tracking
from squeeze.console import describe
from squeeze.config import SweepCfg
from squeeze.prepare import Prepared
from squeeze.recipe import Recipe
from squeeze.registry import technique_label
from squeeze.search_space import resolve_trial


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares: the validated sweep and where to track."""

    sweep: SweepCfg
    tracking_uri: str
    experiment_id: str
    parent_id: str
    cache_dir: str
    checkpoints: bool = True                       # checkpoints_to_keep > 0


def _flat(prefix: str, obj) -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        out.update(_flat(key + ".", v) if isinstance(v, dict) else {key: v})
    return out


def _params(cfg: SweepCfg, prepared: Prepared, source_run: str | None) -> dict:
    """The params that describe the trial: set values only (no "None"), and no training hyperparameter for a
    post-training stage that trained nothing (a DQ trial has no learning rate)."""
    from squeeze.overrides import TRAINING_ONLY
    from squeeze.provenance import environment

    dump = cfg.model_dump(mode="json", exclude={"search_space", "name"}, exclude_none=True)
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


def run_trial(config: dict, prepared: Prepared, context: TrialContext) -> None:
    """Ray Tune function trainable (see ``sweep.build_tuner``)."""
    import ray
    from ray import tune

    cfg = resolve_trial(context.sweep, config)
    trial_id = tune.get_context().get_trial_id() or "local"
    source_run = config.get("source_run")
    tracker = tracking.TrialRun(context.tracking_uri, context.experiment_id, context.parent_id, trial_id,
                                name=f"{cfg.name} {describe(config)}", tags=tracking.trial_tags(cfg))
    try:
        tracker.log_params(_params(cfg, prepared, source_run))
        tracker.log_datasets(prepared.data_name, prepared.key, prepared.data_name, prepared.sizes)
        tracker.set_tags({"ray.node_id": ray.get_runtime_context().get_node_id()})
        uri, cache = context.tracking_uri, context.cache_dir
        source_dir = tracking.download_model(uri, source_run, cache) if source_run else None
        recipe = Recipe(_resolve_run_refs(cfg, uri, cache), prepared, cache_dir=cache, source_dir=source_dir,
                        source_id=source_run, log_metrics=tracker.log_metrics)
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                recipe.restore(d)
        for res in recipe.fit():
            metrics = recipe.epoch_metrics(res)
            tracker.log_metrics(metrics, step=res.epoch)
            report = {**metrics, "epoch": res.epoch, "step": res.step}
            if not context.checkpoints:
                tune.report(report)
                continue
            with tempfile.TemporaryDirectory() as tmp:
                recipe.save_checkpoint(tmp)
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))
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
    tracker.finish()
    tune.report({**final.metrics, "epoch": recipe.loop.state.epoch})
