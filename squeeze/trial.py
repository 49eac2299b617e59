"""The one Ray Tune trainable: one trial = one task x technique(s) x hyperparameter setting.

The only ``tune.report`` is here. Each epoch reports the dev metrics with a checkpoint; a
restarted trial resumes from ``tune.get_checkpoint()``. At the end the techniques finalize the
model (int8 conversion, mask checks), dev and test are evaluated on the final model, and the
model goes through save -> load -> re-evaluate (the parity check). The trial's MLflow child run
follows it: FINISHED at the end, FAILED with the reason when anything raises.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from squeeze import checkpoint, measure, models, serialize, telemetry, tracking
from squeeze.config import SweepCfg
from squeeze.loop import Loop, seed_everything
from squeeze.prepare import Prepared
from squeeze.registry import get_task, get_technique_class
from squeeze.search_space import resolve_trial, technique_params
from squeeze.techniques.base import TechniqueContext


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares: the sweep (as JSON) and where to track."""

    sweep_json: str
    tracking_uri: str
    experiment_id: str
    parent_id: str
    cache_dir: str


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


def auto_class(task, tokenizer) -> str:
    return task.auto_class_for(tokenizer) if hasattr(task, "auto_class_for") else task.auto_class


def _params(cfg: SweepCfg, prepared: Prepared, source_run: str | None) -> dict:
    from squeeze.provenance import environment

    params = _flat("", cfg.model_dump(mode="json", exclude={"search_space", "name"}))
    params.update({"sweep": cfg.name, "technique": "+".join(cfg.technique), "data.name": prepared.data_name,
                   "source_run": source_run or "", **{f"data.n_{k}": v for k, v in prepared.sizes.items()}})
    params.update(environment())
    return params


def _initial_model(cfg, task, prepared, hooks, source_dir):
    for hook in hooks:
        model = hook.initial_model()
        if model is not None:
            return model
    cls = auto_class(task, prepared.tokenizer)
    if source_dir is None:
        return models.build_model(cfg.model.name, cls, prepared.tokenizer, seed=cfg.train.seed, labels=prepared.labels)
    source = serialize.load(source_dir)
    if serialize.read_format(source_dir)["auto_class"] == cls:
        return models.fit_embeddings(source, prepared.tokenizer).train()
    with tempfile.TemporaryDirectory() as tmp:  # another head (pruned MLM -> classifier): transfer the encoder
        source.save_pretrained(tmp, safe_serialization=True)
        return models.build_model(tmp, cls, prepared.tokenizer, seed=cfg.train.seed, labels=prepared.labels)


def _write_outputs(t: Path, model, prepared, predictions, cfg, report, conv1d: bool, cls: str) -> None:
    serialize.save(model, t / "model", auto_class=cls, conv1d_to_linear=conv1d)
    prepared.tokenizer.save_pretrained(t / "model")
    (t / "predictions").mkdir()
    with open(t / "predictions" / "test.jsonl", "w") as fh:
        for row in predictions:
            fh.write(json.dumps(row) + "\n")
    (t / "config").mkdir()
    (t / "config" / "trial.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (t / "config" / "result.json").write_text(json.dumps(report, indent=1))


def _costs(train_meter, eval_meter, cfg) -> tuple[dict, dict]:
    """Energy, CO2 and time of the training and evaluation phases, and their sum."""
    tr, tags = train_meter.metrics("train_")
    ev, _ = eval_meter.metrics("eval_")
    out = {**tr, **ev}
    for kind in ("gpu_kwh", "cpu_kwh", "total_kwh"):
        out[f"energy/{kind}"] = tr[f"energy/train_{kind}"] + ev[f"energy/eval_{kind}"]
    if "power/train_gpu_avg_w" in tr:
        out["power/gpu_avg_w"] = tr["power/train_gpu_avg_w"]
    out = telemetry.with_co2(out, cfg.energy.carbon_intensity, cfg.energy.pue)
    out["time/train_s"], out["time/eval_s"] = tr["time/train_s"], ev["time/eval_s"]
    tags.update({"energy/carbon_intensity_g_per_kwh": str(cfg.energy.carbon_intensity), "energy/pue": str(cfg.energy.pue)})
    return out, tags


def _latency(model, prepared, tc, cfg, eval_on, tracker) -> dict:
    import torch

    threads = tc.num_threads or max(1, int(cfg.resources.cpu))
    kw = dict(batch_size=tc.eval_batch_size, threads=threads, repeats=cfg.measure.latency_repeats,
              examples=cfg.measure.latency_examples)
    out, tags = measure.latency(model, prepared.features["test"], prepared.pad_id, device="cpu", **kw)
    int8 = any("quantized" in type(m).__module__ for m in model.modules())
    if torch.cuda.is_available() and not int8:
        gpu, gtags = measure.latency(model, prepared.features["test"], prepared.pad_id, device="cuda", **kw)
        out.update(gpu)
        tags.update(gtags)
        model.to(eval_on)
    else:
        tags["latency/gpu"] = "int8 runs on CPU only" if int8 else "no GPU"
    tracker.set_tags(tags)
    return out


def _resolve_run_refs(cfg: SweepCfg, uri: str, cache_dir: str) -> SweepCfg:
    """Technique params given as ``runs:/<run id>`` (a PKD teacher) become the downloaded model folder."""
    def resolve(v):
        return tracking.download_model(uri, v[len("runs:/"):], cache_dir) if isinstance(v, str) and v.startswith("runs:/") else v

    return cfg.model_copy(update={"params": {t: {k: resolve(v) for k, v in ps.items()} for t, ps in cfg.params.items()}})


def run_trial(config: dict, prepared: Prepared, context: TrialContext) -> None:
    """Ray Tune function trainable (see ``sweep.build_tuner``)."""
    import torch
    from ray import tune

    cfg = resolve_trial(SweepCfg.model_validate_json(context.sweep_json), config)
    trial_id = tune.get_context().get_trial_id() or "local"
    task = get_task(cfg.task)
    source_run = config.get("source_run")
    tracker = tracking.TrialRun(context.tracking_uri, context.experiment_id, context.parent_id, trial_id,
                                name=f"{cfg.name}-{trial_id}", tags={"task": cfg.task, "technique": "+".join(cfg.technique),
                                                                     "model": cfg.model.name, tracking.SWEEP_TAG: cfg.name})
    try:
        tc = cfg.train
        torch.set_num_threads(tc.num_threads or max(1, int(cfg.resources.cpu)))
        tracker.log_params(_params(cfg, prepared, source_run))
        import ray

        tracker.set_tags({"ray.node_id": ray.get_runtime_context().get_node_id()})
        seed_everything(tc.seed)
        device = _device(tc.device)
        source_dir = tracking.download_model(context.tracking_uri, source_run, context.cache_dir) if source_run else None
        cfg = _resolve_run_refs(cfg, context.tracking_uri, context.cache_dir)

        def evaluate(m, split="dev", final=False, on=None):
            return task.evaluate(m, prepared.features[split], prepared.examples[split], tokenizer=prepared.tokenizer,
                                 labels=prepared.labels, batch_size=tc.eval_batch_size, device=on or device,
                                 eval_cfg=cfg.eval, final=final)

        hooks = []
        for name in cfg.technique:
            ctx = TechniqueContext(task=task, prepared=prepared, model_name=cfg.model.name, params=technique_params(cfg, name),
                                   evaluate=lambda m: evaluate(m)[0], log_metrics=tracker.log_metrics,
                                   cache_dir=context.cache_dir, seed=tc.seed, device=device, source_dir=source_dir,
                                   source_id=source_run)
            hooks.append(get_technique_class(name)(ctx))
        model = _initial_model(cfg, task, prepared, hooks, source_dir)
        loop = Loop(model, hooks=hooks, train=prepared.features["train"], pad_id=prepared.pad_id,
                    evaluate=lambda m: evaluate(m)[0], primary=task.primary_metric, mode=task.mode,
                    lr=tc.lr, epochs=tc.epochs, batch_size=tc.batch_size, warmup_ratio=tc.warmup_ratio,
                    weight_decay=tc.weight_decay, max_grad_norm=tc.max_grad_norm, seed=tc.seed,
                    max_steps=tc.max_steps, device=device, precision=tc.precision, compile=tc.compile,
                    num_workers=tc.num_workers)
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                checkpoint.load(loop, d)
        share = cfg.resources.gpu if 0 < cfg.resources.gpu < 1 else 1.0
        meter = telemetry.EnergyMeter(cfg.energy.power_interval_s, gpu_share=share).start()
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
        meter.stop()
        eval_on = next((h.eval_device for h in hooks if h.eval_device), device)
        model = model.to(eval_on)
        eval_meter = telemetry.EnergyMeter(cfg.energy.power_interval_s, gpu_share=share).start()
        val, _ = evaluate(model, "dev", on=eval_on)
        test, predictions = evaluate(model, "test", final=True, on=eval_on)
        eval_meter.stop()
        costs, cost_tags = _costs(meter, eval_meter, cfg)
        tracker.set_tags(cost_tags)
        tracker.log_series("power/gpu_w", meter.trace())
        cls = auto_class(task, prepared.tokenizer)
        conv1d = any(h.conv1d_to_linear for h in hooks)
        final = {**{f"val/{k}": v for k, v in val.items()}, **{f"test/{k}": v for k, v in test.items()}, **costs}
        final.update(measure.size(model))
        if cfg.measure.latency:
            final.update(_latency(model, prepared, tc, cfg, eval_on, tracker))
        if loop.state.best is not None:
            final.update({f"best/val_{task.primary_metric}": loop.state.best, "best/epoch": loop.state.best_epoch})
        for hook in hooks:
            final.update(hook.ctx.info)
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            _write_outputs(t, model, prepared, predictions, cfg, final, conv1d, cls)
            reloaded = serialize.load(t / "model").to(eval_on)
            again, _ = evaluate(reloaded, "test", on=eval_on)
            diff = abs(again[task.primary_metric] - test[task.primary_metric])
            final.update({"parity/ok": float(diff == 0.0), "parity/abs_diff": diff,
                          "size/disk_mb": serialize.disk_bytes(t / "model") / 2**20})
            tracker.log_metrics(final, step=loop.state.epoch)
            (t / "config" / "result.json").write_text(json.dumps(final, indent=1))
            for sub in ("model", "predictions", "config"):
                tracker.log_artifacts(t / sub, sub)
    except BaseException as exc:
        tracker.fail(exc)
        raise
    tracker.finish()
    tune.report({**final, "epoch": loop.state.epoch})
