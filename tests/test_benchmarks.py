"""The GPU training benchmark (``benchmarks/gpu_train.py``) runs: ``--smoke`` takes the same three arms (plain step,
squeeze's loop, HF Trainer) through the CPU at tiny shapes, so the minutes of a lent GPU are not spent on a script that
no longer runs, and its JSON carries every figure issue #26 asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_training_benchmark_runs_every_arm_and_writes_its_figures(tmp_path):
    out = tmp_path / "train.json"
    r = subprocess.run([sys.executable, "benchmarks/gpu_train.py", "--smoke", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert set(doc["arms"]) == {"plain", "squeeze", "hf"}
    for arm in doc["arms"].values():
        assert arm["samples_per_s"] > 0 and 0 < arm["mfu_vs_989"] < 1 and arm["fraction_of_gemm"] > 0
    assert doc["shape"]["padding_fraction"] == 0  # every example fills the sequence: the arms do the same FLOPs
    assert doc["squeeze_vs_hf"] == pytest.approx(doc["arms"]["hf"]["epoch_s"] / doc["arms"]["squeeze"]["epoch_s"])
    assert doc["squeeze_vs_plain"] == pytest.approx(doc["arms"]["plain"]["epoch_s"] / doc["arms"]["squeeze"]["epoch_s"])
    assert doc["met"].keys() == {"squeeze_vs_hf", "squeeze_vs_plain"} and doc["machine"]["cores"] >= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the benchmark would run")
def test_the_gpu_training_benchmark_says_so_and_exits_2_without_cuda(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/gpu_train.py", "--out", str(tmp_path / "x.json")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no CUDA device" in r.stderr and not (tmp_path / "x.json").exists()


def test_the_gpu_fp8_benchmark_runs_its_arms_and_writes_its_figures(tmp_path):
    """``benchmarks/gpu_fp8.py --smoke``: bf16 (fp32 here) against squeeze's fp8 (emulated on this CPU) on a tiny Llama:
    perplexity, decode tokens/s at two batch sizes, one layer's GEMM; without an fp8 GPU the real run exits 2."""
    out = tmp_path / "fp8.json"
    r = subprocess.run([sys.executable, "benchmarks/gpu_fp8.py", "--smoke", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    base, fp8 = doc["arms"]["fp32"], doc["arms"]["fp8"]
    assert "squeeze fp8 (14 layers)" in fp8["how"] and "no speed-up here" in fp8["how"]
    assert fp8["ppl"] > 1 and base["ppl"] > 1 and fp8["ppl"] != base["ppl"]  # quantized: not the same model
    assert fp8["decode_b2_tokens_per_s"] > 0 and base["decode_b1_speedup"] == 1.0
    assert set(doc["gemm_576x1536"]) == {"32", "256"} and doc["arms"]["int4"]["how"] == "not run with --smoke"
    if not torch.cuda.is_available():
        r = subprocess.run([sys.executable, "benchmarks/gpu_fp8.py", "--out", str(tmp_path / "x.json")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "no CUDA device with fp8 GEMMs" in r.stderr and not (tmp_path / "x.json").exists()
