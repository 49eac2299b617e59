"""One trial's science, without Ray or MLflow: task + techniques + loop, the final evaluation, its
costs, and the save -> reload parity check.

    recipe = Recipe(cfg, prepared, cache_dir=".squeeze_cache")   # cfg: a SweepCfg with one trial's values
    for epoch in recipe.fit():
        print(recipe.epoch_metrics(epoch))
    final = recipe.finish(out_dir)      # model/, predictions/, config/ written under out_dir

The Ray trainable (``squeeze.driver.trial``) adds reporting, checkpoints and the MLflow run around this
object; tests and benchmarks call it directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import yaml

from squeeze import checkpoint, formats, measure, models, pyfunc, quant, telemetry
from squeeze.loop import EpochResult, Loop, seed_everything
from squeeze.prepare import Prepared
from squeeze.registry import get_task, get_technique_class
from squeeze.driver.search_space import technique_params
from squeeze.techniques.base import TechniqueContext


@dataclass
class Final:
    """What a finished trial produced: its metrics and tags, the power trace, and the folder of outputs."""

    metrics: dict[str, float]
    tags: dict[str, str]
    power_trace: list[tuple[int, float]]
    out: Path


def _device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


class Recipe:
    """Build and run one trial of a sweep (``cfg`` resolved: one value per searched field)."""

    def __init__(self, cfg, prepared: Prepared, *, cache_dir: str | Path, source_dir: str | None = None,
                 source_id: str | None = None, log_metrics: Callable[[dict, int], None] | None = None):
        self.cfg, self.prepared, self.cache_dir = cfg, prepared, str(cache_dir)
        self.task = get_task(cfg.task)
        tc = cfg.train
        self.threads = tc.num_threads or max(1, int(cfg.resources.cpu))
        torch.set_num_threads(self.threads)
        seed_everything(tc.seed)
        self.device = _device(tc.device)
        self.log_metrics = log_metrics or (lambda metrics, step: None)
        self.hooks = [get_technique_class(name)(self._context(name, source_dir, source_id)) for name in cfg.technique]
        self.head = self.task.head(prepared.tokenizer)
        model = self._initial_model(source_dir)
        self.init_info = getattr(model, "squeeze_init", {})
        self.loop = Loop(model, hooks=self.hooks, train=prepared.features["train"], pad_id=prepared.pad_id,
                         evaluate=lambda m: self.evaluate(m)[0], primary=self.task.primary_metric, mode=self.task.mode,
                         lr=tc.lr, epochs=tc.epochs, batch_size=tc.batch_size, warmup_ratio=tc.warmup_ratio,
                         weight_decay=tc.weight_decay, max_grad_norm=tc.max_grad_norm, seed=tc.seed,
                         max_steps=tc.max_steps, device=self.device, precision=tc.precision, compile=tc.compile,
                         num_workers=tc.num_workers, transform=self.task.train_transform(prepared.tokenizer),
                         grad_accum=tc.grad_accum)
        self.gpu_share = cfg.resources.gpu if 0 < cfg.resources.gpu < 1 else 1.0
        self.train_meter = None
        self.spent_before: dict[str, float] = {}     # training costs recorded in the checkpoint this trial resumed from

    def _context(self, name: str, source_dir, source_id) -> TechniqueContext:
        tc = self.cfg.train
        return TechniqueContext(task=self.task, prepared=self.prepared, model_name=self.cfg.model.name,
                                params=technique_params(self.cfg, name), evaluate=lambda m: self.evaluate(m)[0],
                                log_metrics=lambda metrics, step: self.log_metrics(metrics, step),
                                cache_dir=self.cache_dir, seed=tc.seed, device=self.device, source_dir=source_dir,
                                source_id=source_id)

    def _initial_model(self, source_dir):
        for hook in self.hooks:
            model = hook.initial_model()
            if model is not None:
                return model
        p, seed = self.prepared, self.cfg.train.seed
        if source_dir is None:
            return models.build_model(self.cfg.model.name, self.head, p.tokenizer, seed=seed, labels=p.labels)
        return models.from_source(source_dir, self.head, p.tokenizer, seed=seed, labels=p.labels,
                                  pretrained=self.cfg.model.name)

    def evaluate(self, model, split: str = "dev", final: bool = False, on=None, subset=None) -> tuple[dict, list[dict]]:
        """Metrics and prediction rows of ``split`` (``subset``: only those example indices, in that order)."""
        p, tc = self.prepared, self.cfg.train
        feats, exs = p.features[split], p.examples[split]
        if subset is not None:
            if len(feats) != len(exs):
                raise ValueError(f"a subset of {split} needs one feature per example ({len(feats)} features, "
                                 f"{len(exs)} examples)")
            feats, exs = [feats[j] for j in subset], [exs[j] for j in subset]
        return self.task.evaluate(model, feats, exs, tokenizer=p.tokenizer, labels=p.labels,
                                  batch_size=tc.eval_batch_size, device=on or self.device, eval_cfg=self.cfg.eval,
                                  final=final)

    # ---------------------------------------------------------------- training
    def restore(self, directory: str | Path) -> None:
        """Continue from a checkpoint written by ``save_checkpoint`` (model, optimizer, loop, technique state); the
        training time and energy spent up to it count in this trial's costs."""
        checkpoint.load(self.loop, directory)
        self.spent_before = dict(self.loop.state.spent)

    def save_checkpoint(self, directory: str | Path) -> Path:
        self.loop.state.spent = self._spent(self.train_meter.so_far("train_") if self.train_meter else {})
        return checkpoint.save(self.loop, directory)

    def _spent(self, now: dict[str, float]) -> dict[str, float]:
        """This attempt's training costs plus those of the attempts before the checkpoint it resumed from (a trial
        restarted after its training ended would otherwise report 0.1 s of training: seen in the repro's prune stage)."""
        keys = ("time/train_s", "energy/train_gpu_kwh", "energy/train_cpu_kwh", "energy/train_total_kwh")
        return {k: float(now.get(k, 0.0)) + float(self.spent_before.get(k, 0.0)) for k in keys
                if k in now or k in self.spent_before}

    def fit(self) -> Iterator[EpochResult]:
        """Train the remaining epochs, metered; yields after each epoch's dev evaluation."""
        self.train_meter = telemetry.EnergyMeter(self.cfg.energy.power_interval_s, gpu_share=self.gpu_share).start()
        yield from self.loop.fit()

    @staticmethod
    def epoch_metrics(res: EpochResult) -> dict[str, float]:
        metrics = {f"val/{k}": v for k, v in res.metrics.items()}
        metrics.update({"train/loss": res.train_loss, "train/padding_fraction": res.padding_fraction,
                        "train/samples_per_s": res.samples_per_s, "time/epoch_train_s": res.train_s})
        return metrics

    def size_now(self) -> dict[str, float]:
        """Parameters and non-zeros of the model being trained (per epoch: what a size objective of MO-ASHA reads)."""
        with torch.no_grad():
            ps = list(self.loop.model.parameters())
            return {"size/params": float(sum(p.numel() for p in ps)),
                    "size/nonzero": float(sum(int(torch.count_nonzero(p)) for p in ps))}

    def stopped_costs(self, until: float) -> tuple[dict, dict]:
        """The training phase's energy, CO2 and time up to ``until`` (``time.monotonic()`` of the last epoch's report),
        for a trial a scheduler stopped: the stop can reach the trial long after that report (when Tune reuses or
        ends its actor), so time is cut there and energy scaled to that share of the metered span."""
        self.train_meter.stop()
        tr, tags = self.train_meter.metrics("train_")
        span = max(self.train_meter.t1 - self.train_meter.t0, 1e-9)
        share = min(1.0, max(0.0, (until - self.train_meter.t0) / span))
        tr = {k: v * share if k.startswith(("energy/", "time/")) and not k.endswith("disagreement") else v
              for k, v in tr.items()}
        tr.update(self._spent(tr))
        tags["energy/stopped_share"] = f"{share:.4f} of the metered span (up to the last epoch's report)"
        out = {**tr, **{f"energy/{k}": tr[f"energy/train_{k}"] for k in ("gpu_kwh", "cpu_kwh", "total_kwh")}}
        out = telemetry.with_co2(out, self.cfg.energy.carbon_intensity, self.cfg.energy.pue)
        return {**out, "time/train_s": tr["time/train_s"], "time/eval_s": 0.0}, tags

    # ---------------------------------------------------------------- the end of a trial
    def finish(self, out: str | Path) -> Final:
        """Best weights, technique finalization (int8, mask checks), dev/test, costs, size, latency, and the
        model saved in its real format, loaded back and re-evaluated (``parity/ok``)."""
        out = Path(out)
        if self.train_meter is None:  # nothing left to train (a post-training technique, or resumed at the end)
            self.train_meter = telemetry.EnergyMeter(self.cfg.energy.power_interval_s, gpu_share=self.gpu_share).start()
        if all(h.restores_best for h in self.hooks):
            self.loop.load_best()
        model = self.loop.finalize()
        self.train_meter.stop()
        eval_on = next((h.eval_device for h in self.hooks if h.eval_device), self.device)
        model = model.to(eval_on)
        eval_meter = telemetry.EnergyMeter(self.cfg.energy.power_interval_s, gpu_share=self.gpu_share).start()
        val, _ = self.evaluate(model, "dev", on=eval_on)
        test, predictions = self.evaluate(model, "test", final=True, on=eval_on)
        eval_meter.stop()
        costs, tags = self._costs(eval_meter)
        final = {**{f"val/{k}": v for k, v in val.items()}, **{f"test/{k}": v for k, v in test.items()}, **costs}
        codec = formats.of(model)
        final.update(codec.size(model))
        if self.cfg.measure.latency:  # CPU latency: measured by the driver after the sweep, alone (squeeze.driver.sweep)
            lat, lat_tags = self._gpu_latency(model, eval_on)
            final.update(lat)
            tags.update(lat_tags)
        state = self.loop.state
        if state.best is not None:
            final.update({f"best/val_{self.task.primary_metric}": state.best, "best/epoch": state.best_epoch})
        for hook in self.hooks:
            final.update(hook.ctx.info)
        final.update(self.init_info)
        self._write(out, model, predictions)
        final.update(self._parity(out / "model", model, test, eval_on))
        emb = codec.embedding_bytes(model, out / "model") / 2**20
        final.update({"size/embeddings_mb": emb, "size/rest_mb": final["size/disk_mb"] - emb,
                      "size/embeddings_int8": float(any(isinstance(m, quant.Int8Embedding) for m in model.modules())
                                                    or final.get("quant/int8_embeddings", 0.0) > 0)})
        (out / "config" / "result.json").write_text(json.dumps(final, indent=1))
        return Final(final, tags, self.train_meter.trace(), out)

    def _costs(self, eval_meter) -> tuple[dict, dict]:
        """Energy, CO2 and time of the training and evaluation phases, and their sum."""
        tr, tags = self.train_meter.metrics("train_")
        tr.update(self._spent(tr))
        if self.spent_before:
            tags["squeeze.costs_before_resume"] = json.dumps(self.spent_before, sort_keys=True)
        ev, _ = eval_meter.metrics("eval_")
        out = {**tr, **ev}
        for kind in ("gpu_kwh", "cpu_kwh", "total_kwh"):
            out[f"energy/{kind}"] = tr[f"energy/train_{kind}"] + ev[f"energy/eval_{kind}"]
        if "power/train_gpu_avg_w" in tr:
            out["power/gpu_avg_w"] = tr["power/train_gpu_avg_w"]
        energy = self.cfg.energy
        out = telemetry.with_co2(out, energy.carbon_intensity, energy.pue)
        out["time/train_s"], out["time/eval_s"] = tr["time/train_s"], ev["time/eval_s"]
        tags.update({"energy/carbon_intensity_g_per_kwh": str(energy.carbon_intensity), "energy/pue": str(energy.pue)})
        return out, tags

    def _gpu_latency(self, model, eval_on) -> tuple[dict, dict]:
        """CUDA-event latency on the trial's own GPU (CPU latency is measured after the sweep, alone)."""
        codec = formats.of(model)
        if not torch.cuda.is_available() or "cuda" not in codec.devices:
            return {}, {"latency/gpu": f"{codec.name} runs on CPU only" if torch.cuda.is_available() else "no GPU"}
        tc, m = self.cfg.train, self.cfg.measure
        out, tags = measure.latency(model, self.prepared.features["test"], self.prepared.pad_id, device="cuda",
                                    batch_size=tc.eval_batch_size, threads=self.threads, repeats=m.latency_repeats,
                                    examples=m.latency_examples)
        model.to(eval_on)
        return out, tags

    def _write(self, out: Path, model, predictions: list[dict]) -> None:
        formats.save(model, out / "model", auto_class=self.head, task=self.cfg.task)
        self.prepared.tokenizer.save_pretrained(out / "model")
        pyfunc.add_flavor(out / "model", self.cfg.task)  # an MLflow Model: mlflow.pyfunc.load_model, register_model
        (out / "predictions").mkdir(parents=True, exist_ok=True)
        with open(out / "predictions" / "test.jsonl", "w") as fh:
            for row in predictions:
                fh.write(json.dumps(row) + "\n")
        (out / "config").mkdir(parents=True, exist_ok=True)
        (out / "config" / "trial.yaml").write_text(yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False))

    def _parity(self, model_dir: Path, model, test: dict, eval_on) -> dict[str, float]:
        """The saved model, loaded back, must score what the trained one scored. ``measure.parity: sample`` (the
        default) compares both on a fixed random sample of ``parity_examples`` test examples (two passes over the
        sample instead of one over the whole test set); ``full`` re-scores the whole test set."""
        import random

        m, n = self.cfg.measure, len(self.prepared.features["test"])
        # a sample needs features and examples index by index; the LM task cuts its lines into blocks (more features
        # than examples, the words counted over the lines): it re-scores its whole test set
        aligned = n == len(self.prepared.examples["test"])
        subset = None
        if m.parity == "sample" and n > m.parity_examples and aligned:
            subset = sorted(random.Random(0).sample(range(n), m.parity_examples))
            test, _ = self.evaluate(model, "test", on=eval_on, subset=subset)
        reloaded = formats.load(model_dir).to(eval_on)
        again, _ = self.evaluate(reloaded, "test", on=eval_on, subset=subset)
        primary = self.task.primary_metric
        diff = abs(again[primary] - test[primary])
        # on the CPU the reloaded model must score exactly the same; on CUDA the same model, evaluated twice, may not
        # (an H100 gave perplexities 6e-7 apart, relative: its reductions are not run-to-run deterministic), so a
        # continuous metric gets a relative 1e-5 there: a save/load defect moves it far more
        tol = 1e-5 * max(1.0, abs(test[primary])) if torch.device(eval_on).type == "cuda" else 0.0
        return {"parity/ok": float(diff <= tol), "parity/abs_diff": diff, "parity/tolerance": tol,
                "parity/examples": float(len(subset) if subset is not None else n),
                "size/disk_mb": formats.disk_bytes(model_dir) / 2**20}
