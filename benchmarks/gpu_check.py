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

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, summary


def check_sweep() -> dict:
    import ray

    from squeeze import config, sweep
    from squeeze.tracking import default_uri, mlflow_client

    cfg = config.parse({"experiment": "gpu-check", "sweeps": [{
        "name": "shared", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 600},
        "train": {"epochs": 3, "batch_size": 32, "max_length": 64, "device": "cuda"}, "resources": {"cpu": 1, "gpu": 0.5},
        "energy": {"power_interval_s": 5.0}, "search_space": {"seed": {"grid_search": [0, 1]}}}]})
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
            outcome = sweep.run(cfg)[0]
            client = mlflow_client(default_uri())
            exp = client.get_experiment_by_name("gpu-check")
            runs = client.search_runs([exp.experiment_id], "tags.`squeeze.trial_id` != ''")
        finally:
            ray.shutdown()
            os.chdir(here)
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
    from run import _prepared, _recipe

    with tempfile.TemporaryDirectory() as cache:
        sweep, prepared, _ = _prepared(512, 128, Path(cache))
        speed = {}
        for precision in ("fp32", "bf16", "fp16"):
            sps = []
            for _ in range(reps):
                loop = _recipe(sweep, prepared, cache, device="cuda", precision=precision).loop
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                _, _, n = loop.train_epoch(0)
                torch.cuda.synchronize()
                sps.append(n / (time.perf_counter() - t0))
            speed[precision] = sps
    fp32 = statistics.median(speed["fp32"])
    return {"bf16_vs_fp32_train": summary([s / fp32 for s in speed["bf16"]], samples_per_s=speed),
            "fp16_vs_fp32_train": summary([s / fp32 for s in speed["fp16"]], samples_per_s=speed)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing to check", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    results = {}
    for name, fn in (("sweep", check_sweep), ("energy", check_energy), ("latency", check_latency),
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
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(json.dumps(doc, indent=1)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
