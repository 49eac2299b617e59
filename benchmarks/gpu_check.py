"""make gpu-check: the GPU paths on a real NVIDIA GPU, in one command, written to benchmarks/results/<date>-<gpu>.json.

    .venv/bin/python benchmarks/gpu_check.py [--out FILE]

1. a short real sweep (tiny-bert sentiment, 2 trials of 0.5 GPU each, sharing one GPU) through ``squeeze sweep``:
   both trials on the same GPU, their energy from NVML (counter and 5 s samples), CUDA-event latency, all in MLflow;
2. the NVML energy counter against the integral of 1 s power samples over 30 s of matmuls;
3. CUDA-event latency of MiniLM (batch 1 and 32, fp32);
4. bf16 and fp16 (autocast + GradScaler) training speed of squeeze's loop on MiniLM against fp32.

Exits 2 without a CUDA device (nothing is written): there is nothing to check.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, gpu_args, summary


def _trial_runs(experiment: str, run):
    """``run()`` in a fresh working folder (its own local MLflow store), then that experiment's trial runs."""
    from squeeze.tracking import default_uri, mlflow_client

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            result = run()
            client = mlflow_client(default_uri())
            exp = client.get_experiment_by_name(experiment)
            runs = client.search_runs([exp.experiment_id], "tags.`squeeze.trial_id` != ''") if exp else []
        finally:
            os.chdir(here)
    return result, runs


def check_sweep() -> dict:
    import ray

    from squeeze import config
    from squeeze.driver import sweep

    cfg = config.parse({"experiment": "gpu-check", "sweeps": [{
        "name": "shared", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 600},
        "train": {"epochs": 3, "batch_size": 32, "max_length": 64, "device": "cuda"}, "resources": {"cpu": 1, "gpu": 0.5},
        "energy": {"power_interval_s": 5.0}, "search_space": {"seed": {"grid_search": [0, 1]}}}]})
    def run():  # Ray started inside the fresh folder: its workers take the driver's working folder
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        try:
            return sweep.run(cfg)[0]
        finally:
            ray.shutdown()

    outcome, runs = _trial_runs("gpu-check", run)
    keys = ("energy/gpu_kwh", "energy/train_gpu_kwh_counter", "energy/train_gpu_kwh_sampled", "energy/train_gpu_disagreement",
            "power/gpu_avg_w", "latency/gpu_ms_per_example", "test/accuracy")
    trials = [{"status": r.info.status, "gpus": r.data.tags.get("energy/gpus"), "gpu_source": r.data.tags.get("energy/gpu_source"),
               "gpu_shared": r.data.tags.get("energy/gpu_shared"), **{k: r.data.metrics.get(k) for k in keys}} for r in runs]
    ok = (len(runs) == 2 and not outcome.errors and all(t["status"] == "FINISHED" for t in trials)
          and len({t["gpus"] for t in trials}) == 1 and all(t["gpu_source"] == "nvml_counter" for t in trials)
          and all((t["latency/gpu_ms_per_example"] or 0) > 0 for t in trials))
    return {"fractional_sweep": {"ok": ok, "trials": trials,
                                 "note": "2 trials x 0.5 GPU: same GPU, NVML counter energy scaled by the share, "
                                         "CUDA-event latency"}}


def check_study() -> dict:
    """The quickstart study (every technique on all three tasks: IMP prune and fine-tune, PKD, DQ, DQ+IMP, QAT) with
    each trial on a quarter of the GPU, through ``squeeze study`` as a user runs it."""
    import yaml

    from squeeze import cli

    with open(ROOT / "sweeps" / "quickstart.yaml") as fh:
        doc = yaml.safe_load(fh)
    doc["experiment"], doc["max_concurrent_trials"] = "gpu-quickstart", 4
    doc["defaults"]["resources"] = {"cpu": 2, "gpu": 0.25}

    def study():
        with open("study.yaml", "w") as fh:
            yaml.safe_dump(doc, fh)
        t0 = time.perf_counter()
        return cli.main(["study", "study.yaml"]), time.perf_counter() - t0

    (rc, seconds), runs = _trial_runs("gpu-quickstart", study)
    trials = [{"sweep": r.data.tags.get("squeeze.sweep"), "status": r.info.status,
               "gpu_source": r.data.tags.get("energy/gpu_source"),
               "gpu_ms_per_example": r.data.metrics.get("latency/gpu_ms_per_example")} for r in runs]
    sweeps = {}
    for t in trials:
        sweeps.setdefault(t["sweep"], []).append(t)
    ok = (rc == 0 and len(trials) > 0 and all(t["status"] == "FINISHED" for t in trials)
          and all(t["gpu_source"] == "nvml_counter" for t in trials))
    return {"quickstart_study_on_gpu": {
        "ok": ok, "rc": rc, "seconds": round(seconds, 1), "trials": len(trials),
        "finished": sum(t["status"] == "FINISHED" for t in trials),
        "by_sweep": {k: {"trials": len(v), "finished": sum(t["status"] == "FINISHED" for t in v),
                         "gpu_sources": sorted({str(t["gpu_source"]) for t in v}),
                         "gpu_ms_per_example": [t["gpu_ms_per_example"] for t in v]} for k, v in sorted(sweeps.items())},
        "note": "sweeps/quickstart.yaml with resources {cpu: 2, gpu: 0.25}, 4 trials at a time on one GPU"}}


def check_energy(seconds: float = 30.0) -> dict:
    from squeeze import telemetry

    a = torch.randn(4096, 4096, device="cuda")
    meter = telemetry.EnergyMeter(power_interval_s=1.0, gpu_ids=["0"]).start()
    t0 = time.time()
    while time.time() - t0 < seconds:
        a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
    meter.stop()
    m, tags = meter.metrics()
    return {"nvml_counter_vs_samples": {**{k: v for k, v in m.items() if "gpu" in k}, **tags, "seconds": seconds,
                                        "note": "energy counter delta vs trapezoid over 1 s power samples, busy GPU"}}


def check_latency() -> dict:
    import transformers

    from squeeze import measure, models
    from squeeze.presets import minilm_path

    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    model = models.build_model("minilm", "AutoModelForSequenceClassification", tok, seed=0, labels=["neg", "pos"])
    model = model.cuda().eval()
    out = {}
    for b in (1, 32):
        batch = {"input_ids": torch.randint(1000, 20000, (b, 128), device="cuda"),
                 "attention_mask": torch.ones(b, 128, dtype=torch.long, device="cuda")}
        with torch.no_grad():
            out[f"minilm_batch{b}"] = measure.time_gpu(lambda: model(**batch), warmup=5, repeats=30)
    return {"cuda_event_latency_ms": out}


def check_precision(reps: int = 3) -> dict:
    """Training speed of squeeze's loop on MiniLM in bf16 and fp16 against fp32 on the short synthetic sentences, at
    batch 16 (a small model's step is then bound by kernel launches, not arithmetic) and at batch 128."""
    from run import _prepared, cuda_epoch_speed

    out = {}
    with tempfile.TemporaryDirectory() as cache:
        sweep, prepared, _ = _prepared(1024, 128, Path(cache))
        for batch in (16, 128):
            speed = {}
            for precision in ("fp32", "bf16", "fp16"):
                speed[precision] = cuda_epoch_speed(sweep, prepared, cache, reps, precision=precision, batch_size=batch)
            fp32 = statistics.median(speed["fp32"])
            out[f"batch{batch}"] = {"bf16_vs_fp32_train": summary([s / fp32 for s in speed["bf16"]]),
                                    "fp16_vs_fp32_train": summary([s / fp32 for s in speed["fp16"]]),
                                    "samples_per_s": speed}
    return {"precision_train_speed": out}


def main() -> int:
    args = gpu_args("gpu-check")
    if args is None:
        return 2
    gpu = torch.cuda.get_device_name(0)
    results = {}
    for name, fn in (("sweep", check_sweep), ("study", check_study), ("energy", check_energy), ("latency", check_latency),
                     ("precision", check_precision)):
        t0 = time.perf_counter()
        try:
            results.update(fn())
        except Exception as exc:  # one failing check must not hide the others' results
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(f"[gpu-check] {name}: {time.perf_counter() - t0:.0f}s", flush=True)
    from run import machine

    date = datetime.date.today().isoformat()
    out = args.out or str(ROOT / "benchmarks" / "results" / f"{date}-{gpu.replace(' ', '-').lower()}.json")
    doc = {"date": date, "gpu": gpu, "cuda": torch.version.cuda, "machine": machine(), "results": results}
    if os.environ.get("SQUEEZE_GPU_CHECK_NOTE"):  # how this run differs from a plain `make gpu-check`
        doc["note"] = os.environ["SQUEEZE_GPU_CHECK_NOTE"]
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(json.dumps(doc, indent=1)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
