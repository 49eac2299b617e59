"""Figures read against the machine and the deployment peers: training FLOP/s against a plain GEMM of the model's
own shapes, and squeeze's DQ latency against ONNX Runtime's dynamic int8. Imported by ``benchmarks/run.py``."""

from __future__ import annotations

import statistics
import time

import torch
from common import THREADS, summary


def _shapes(model) -> tuple[int, int, int, int]:
    c = model.config
    return c.num_hidden_layers, c.hidden_size, c.intermediate_size, sum(
        p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def _gemm_flops_per_s(tokens: int, d: int, ff: int, repeats: int = 10, device: str = "cpu",
                      dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of plain torch.mm over one layer's Linear shapes (Q, K, V, O, FFN in, FFN out) at ``tokens`` rows:
    forward and both backward GEMMs of each (x @ W, dY @ W^T, X^T @ dY), on the same threads (or GPU) as training."""
    shapes = [(tokens, d, d)] * 4 + [(tokens, d, ff), (tokens, ff, d)]
    mats = []
    for m, k, n in shapes:
        x, w, g = (torch.randn(*s, device=device, dtype=dtype) for s in ((m, k), (k, n), (m, n)))
        mats += [(x, w), (g, w.t().contiguous()), (x.t().contiguous(), g)]
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in mats)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for a, b in mats:  # warm-up
        torch.mm(a, b)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        for a, b in mats:
            torch.mm(a, b)
    sync()
    return flops * repeats / (time.perf_counter() - t0)


def bench_gemm_fraction(recipe_of, reps: int) -> dict:
    """Training FLOP/s of squeeze's loop (one MiniLM epoch) / plain GEMM FLOP/s of the model's shapes.

    Training FLOPs per batch = 6 x non-embedding parameters x tokens + 12 x layers x hidden x seq x tokens
    (attention scores and values, forward and backward), counted on the padded batches the loop really runs.
    """
    torch.set_num_threads(THREADS)
    fractions, achieved, peaks = [], [], []
    for _ in range(reps):
        loop = recipe_of().loop
        layers, d, ff, n_params = _shapes(loop.model)
        flops, tokens = 0.0, []
        for _, batch in loop._batches(0):  # the same batches the timed epoch runs (same seed, same epoch)
            b, s = batch["input_ids"].shape
            flops += 6 * n_params * b * s + 12 * layers * d * s * b * s
            tokens.append(b * s)
        t0 = time.perf_counter()
        loop.train_epoch(0)
        achieved.append(flops / (time.perf_counter() - t0))
        peaks.append(_gemm_flops_per_s(int(statistics.median(tokens)), d, ff))
        fractions.append(achieved[-1] / peaks[-1])
    return {"train_gemm_fraction": summary(
        fractions, train_gflops=statistics.median(achieved) / 1e9, gemm_gflops=statistics.median(peaks) / 1e9,
        threads=THREADS, step_profile=step_profile(recipe_of().loop),
        note="training FLOP/s (6 N T + 12 L d s T on the padded batches; N = non-embedding "
             "parameters) / torch.mm FLOP/s of one layer's forward and backward GEMM shapes at the "
             "median batch's tokens, same threads; informational (no goal). step_profile: share of a training "
             "step's CPU time per kind of kernel (torch.profiler, self time, 6 steps)")}


GEMM_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
ATTENTION_OPS = ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::_softmax", "aten::softmax")
OPTIMIZER_OPS = ("aten::_fused_adamw", "aten::_foreach", "Optimizer.")


def step_profile(loop, steps: int = 6) -> dict:
    """Where a training step's CPU time goes, by kernel kind (self time): the share no loop can remove (GEMMs,
    attention: the Trainer runs the same ones) against what a loop controls (optimizer, data, Python)."""
    from torch.profiler import ProfilerActivity, profile

    batches = [b for _, b in zip(range(steps + 1), loop._batches(0))]
    loop._step(batches[0][1], batches[0][0])  # warm-up, not profiled
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for indices, batch in batches[1:]:
            loop._step(batch, indices)
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows) or 1.0

    def share(prefixes):
        return sum(r.self_cpu_time_total for r in rows if r.key.startswith(prefixes)) / total

    gemm, attention, optimizer = share(GEMM_OPS), share(ATTENTION_OPS), share(OPTIMIZER_OPS)
    top = sorted(rows, key=lambda r: -r.self_cpu_time_total)[:8]
    return {"gemm": gemm, "attention": attention, "optimizer": optimizer, "other": 1 - gemm - attention - optimizer,
            "top": {r.key: r.self_cpu_time_total / total for r in top}}


def bench_dq_vs_ort(model_of, prepared, reps: int) -> dict:
    """squeeze's ONNX Runtime DQ backend (``squeeze.formats.onnx_int8``: export, checked, ``quantize_dynamic``) latency / its
    ``torch.ao`` DQ latency, same MiniLM classifier, same real test batches (batch 1 and 8), same threads."""
    import onnxruntime as ort

    from squeeze import measure
    from squeeze.formats import onnx_int8 as onnxrt
    from squeeze.techniques.dq import quantize

    batches = {b: onnxrt.example_batch(prepared.features["test"][:b], prepared.pad_id) for b in (1, 8)}
    ort_dq = onnxrt.quantize(model_of(), batches[8], batches[1], embeddings=True)  # backend onnxruntime, as deployed
    dq, _ = quantize(model_of().eval(), embeddings=True)  # squeeze's DQ as a trial deploys it
    fp32 = model_of().eval()
    out = {}
    for b, batch in batches.items():
        ratios, ours, theirs = [], [], []
        for i in range(reps):
            with torch.no_grad():
                arms = [lambda: dq(**batch), lambda: ort_dq(**batch)]
                if i % 2:
                    arms.reverse()
                t = [measure.time_cpu(fn, warmup=3, repeats=20, threads=THREADS)["median_ms"] for fn in arms]
                t_dq, t_ort = (t[0], t[1]) if i % 2 == 0 else (t[1], t[0])
            ratios.append(t_ort / t_dq)
            ours.append(t_dq)
            theirs.append(t_ort)
        with torch.no_grad():  # both int8 arms against the fp32 model they came from (the same seeded head)
            ref = fp32(**batch).logits
            err_dq = float((dq(**batch).logits - ref).abs().max())
            err_ort = float((ort_dq(**batch).logits - ref).abs().max())
        key = "dq_vs_onnxruntime_int8" if b == 1 else f"dq_vs_onnxruntime_int8_batch{b}"
        out[key] = summary(ratios, squeeze_dq_ms=statistics.median(ours), onnxruntime_int8_ms=statistics.median(theirs),
                           batch=b, seq=int(batch["input_ids"].shape[1]), threads=THREADS,
                           squeeze_dq_max_abs_logit_error=err_dq, onnxruntime_max_abs_logit_error=err_ort,
                           onnxruntime=ort.__version__,
                           note="DQ backend onnxruntime (ONNX export, quantize_dynamic QInt8 with embeddings) latency / "
                                "DQ backend torch (torch.ao dynamic int8 Linear + int8 embeddings, the default); > 1: "
                                "torch.ao faster. Latency only: the classifier head is the seeded, untrained one, so "
                                "the logit errors (each arm vs the fp32 model) say more than argmax agreement")
    return out
