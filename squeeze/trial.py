"""The one Ray Tune trainable: one trial = one task x technique x hyperparameter setting.

The only ``tune.report`` is here. Each epoch reports the dev metrics with a checkpoint; a
restarted trial resumes from ``tune.get_checkpoint()``. The trial's MLflow child run follows
it: FINISHED at the end, FAILED with the reason when anything raises.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from squeeze import checkpoint, models, tracking
from squeeze.config import SweepCfg, resolve_trial
from squeeze.loop import Loop, seed_everything
from squeeze.prepare import Prepared
from squeeze.registry import get_task, get_technique_class


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares: the sweep (as JSON) and where to track."""

    sweep_json: str
    tracking_uri: str
    experiment_id: str
    parent_id: str


def _flat(prefix: str, obj) -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        out.update(_flat(key + ".", v) if isinstance(v, dict) else {key: v})
    return out


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def _params(cfg: SweepCfg, prepared: Prepared) -> dict:
    from squeeze.provenance import environment

    params = _flat("", cfg.model_dump(mode="json", exclude={"search_space", "name"}))
    params.update({"sweep": cfg.name, "technique": "+".join(cfg.technique), "data.name": prepared.data_name,
                   **{f"data.n_{k}": v for k, v in prepared.sizes.items()}})
    params.update(environment())
    return params


def _save_outputs(tracker, model, prepared: Prepared, predictions: list[dict], cfg: SweepCfg, report: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        model.save_pretrained(t / "model", safe_serialization=True)
        prepared.tokenizer.save_pretrained(t / "model")
        (t / "predictions").mkdir()
        with open(t / "predictions" / "test.jsonl", "w") as fh:
            for row in predictions:
                fh.write(json.dumps(row) + "\n")
        (t / "config").mkdir()
        (t / "config" / "trial.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        (t / "config" / "result.json").write_text(json.dumps(report, indent=1))
        for sub in ("model", "predictions", "config"):
            tracker.log_artifacts(t / sub, sub)


def run_trial(config: dict, prepared: Prepared, context: TrialContext) -> None:
    """Ray Tune function trainable (see ``sweep.build_tuner``)."""
    import torch
    from ray import tune

    cfg = resolve_trial(SweepCfg.model_validate_json(context.sweep_json), config.get("train", {}))
    trial_id = tune.get_context().get_trial_id() or "local"
    task = get_task(cfg.task)
    tracker = tracking.TrialRun(context.tracking_uri, context.experiment_id, context.parent_id, trial_id,
                                name=f"{cfg.name}-{trial_id}", tags={"task": cfg.task, "technique": "+".join(cfg.technique),
                                                                     "model": cfg.model.name, tracking.SWEEP_TAG: cfg.name})
    try:
        tc = cfg.train
        torch.set_num_threads(tc.num_threads or max(1, int(cfg.resources.cpu)))
        tracker.log_params(_params(cfg, prepared))
        seed_everything(tc.seed)
        device = _device(tc.device)
        model = models.build_model(cfg.model.name, task.auto_class, prepared.tokenizer, seed=tc.seed, labels=prepared.labels)
        hooks = [get_technique_class(name)() for name in cfg.technique]

        def evaluate(m, split="dev", final=False):
            return task.evaluate(m, prepared.features[split], prepared.examples[split], tokenizer=prepared.tokenizer,
                                 labels=prepared.labels, batch_size=tc.eval_batch_size, device=device,
                                 eval_cfg=cfg.eval, final=final)

        loop = Loop(model, hooks=hooks, train=prepared.features["train"], pad_id=prepared.pad_id,
                    evaluate=lambda m: evaluate(m)[0], primary=task.primary_metric, mode=task.mode,
                    lr=tc.lr, epochs=tc.epochs, batch_size=tc.batch_size, warmup_ratio=tc.warmup_ratio,
                    weight_decay=tc.weight_decay, max_grad_norm=tc.max_grad_norm, seed=tc.seed,
                    max_steps=tc.max_steps, device=device)
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                checkpoint.load(loop, d)
        for res in loop.fit():
            metrics = {f"val/{k}": v for k, v in res.metrics.items()}
            metrics.update({"train/loss": res.train_loss, "train/padding_fraction": res.padding_fraction,
                            "train/samples_per_s": res.samples_per_s, "time/epoch_train_s": res.train_s})
            tracker.log_metrics(metrics, step=res.epoch)
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint.save(loop, tmp)
                tune.report({**metrics, "epoch": res.epoch, "step": res.step}, checkpoint=tune.Checkpoint.from_directory(tmp))
        loop.load_best()
        model = loop.finalize()
        test, predictions = evaluate(model, "test", final=True)
        best = {f"best/val_{task.primary_metric}": loop.state.best, "best/epoch": loop.state.best_epoch}
        final = {**{f"test/{k}": v for k, v in test.items()}, **best}
        tracker.log_metrics(final, step=loop.state.epoch)
        _save_outputs(tracker, model, prepared, predictions, cfg, final)
        at_best = next((h for h in loop.state.history if h["epoch"] == loop.state.best_epoch), {})
        best_val = {f"val/{k}": v for k, v in at_best.items() if k not in ("epoch", "loss")}
    except BaseException as exc:
        tracker.fail(exc)
        raise
    tracker.finish()
    tune.report({**best_val, **final, "epoch": loop.state.epoch})
