"""Size and latency of a model, measured the same way for every technique.

Size: bytes of the saved weights on disk in their real format (dense, int8, sparse), parameter
and non-zero counts (int8 weights included), bytes in memory. Latency: a fixed thread count,
warm-up first, then the median, p10 and p90 over repeats; per example at batch 1 and per test set
at the evaluation batch size (the paper's "inference time"); on GPU with CUDA events. CPU latency is
measured by the driver after a sweep, one saved model at a time with the CPU to itself
(``squeeze.driver.sweep``): measured inside trials that share the CPU, two identical models differed 2x.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def size(model: torch.nn.Module) -> dict[str, float]:
    """Parameter count, non-zero count and bytes in memory, as the model's codec stores it (int8 counted as int8)."""
    from squeeze import formats

    return formats.of(model).size(model)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def time_cpu(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 10, threads: int | None = None,
             clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median, p10 and p90 wall time (ms) of ``fn`` after ``warmup`` untimed calls, at ``threads`` threads."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            t0 = clock()
            fn()
            times.append((clock() - t0) * 1000)
    finally:
        torch.set_num_threads(old)
    return {"median_ms": statistics.median(times), "p10_ms": percentile(times, 0.1), "p90_ms": percentile(times, 0.9),
            "threads": threads or old}


def decode_rate(decoder, prompt: list[int], new_tokens: int, *, threads: int, repeats: int = 3) -> dict[str, float]:
    """Greedy decode tokens/s at batch 1: (new_tokens - 1) / the seconds after the prompt (the first new token comes
    with the prompt), median of ``repeats`` after a short warm-up."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        decoder.generate(prompt, min(new_tokens, 4))
        rates = [(new_tokens - 1) / max(decoder.generate(prompt, new_tokens)[1], 1e-9) for _ in range(repeats)]
    finally:
        torch.set_num_threads(old)
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def time_gpu(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 10) -> dict[str, float]:
    """Median, p10 and p90 (ms) with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "p10_ms": percentile(times, 0.1), "p90_ms": percentile(times, 0.9)}


def latency(model: torch.nn.Module, features: list[dict], pad_id: int, *, batch_size: int, threads: int,
            device: str, repeats: int = 5, examples: int = 16) -> tuple[dict[str, float], dict[str, str]]:
    """Per-example (batch 1) and per-test-set latency on ``device``; metrics and tags."""
    from squeeze.tasks.base import MODEL_KEYS, collate, to_device

    keys = [k for k in MODEL_KEYS if k != "labels"]
    model = model.eval().to(device)
    one = [to_device(collate([f], pad_id, keys), device) for f in features[:examples]]
    full = [to_device(collate(features[i:i + batch_size], pad_id, keys), device) for i in range(0, len(features), batch_size)]

    def run(batches):
        with torch.no_grad():
            for b in batches:
                model(**b)

    prefix = "cpu" if device == "cpu" else "gpu"
    timer = (lambda fn, **kw: time_cpu(fn, threads=threads, **kw)) if device == "cpu" else time_gpu
    ex = timer(lambda: run(one), warmup=1, repeats=repeats)
    ts = timer(lambda: run(full), warmup=1, repeats=max(1, repeats // 2))
    n = max(len(one), 1)
    metrics = {f"latency/{prefix}_ms_per_example": ex["median_ms"] / n, f"latency/{prefix}_p10_ms_per_example": ex["p10_ms"] / n,
               f"latency/{prefix}_p90_ms_per_example": ex["p90_ms"] / n, f"latency/{prefix}_test_set_s": ts["median_ms"] / 1000}
    return metrics, {f"latency/{prefix}_threads": str(threads) if device == "cpu" else "cuda"}
