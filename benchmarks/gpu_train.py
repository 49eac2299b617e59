"""Training throughput of a BERT-base-shaped classifier on a GPU (#26 item 3), written to
benchmarks/results/<date>-<gpu>-train.json:

    .venv/bin/python benchmarks/gpu_train.py [--out FILE] [--seconds 10]
    .venv/bin/python benchmarks/gpu_train.py --smoke --out FILE      # the same code on the CPU, tiny shapes (tests)

BERT-base shapes (12 layers, hidden 768, random weights: timing only), sequence 128, batch 32, bf16 autocast, one
epoch of at least ``--seconds`` on every arm, each timed on its second epoch (the first warms cuBLAS and the
allocator):
- ``plain``: a plain PyTorch step on batches already on the device (autocast forward, backward, clipping at 1.0,
  fused AdamW): the ceiling a training loop can reach;
- ``squeeze``: squeeze's own loop (``Recipe(...).loop.train_epoch``), DataLoader included;
- ``hf``: Hugging Face ``Trainer`` on the same examples (bf16, fused AdamW, the same batch and clipping).
Model FLOP utilisation = (6 N T + 12 L d s T) / step time (N: non-embedding parameters, T: tokens per step), against
989 TFLOP/s (H100/H200 SXM dense bf16) and against plain bf16 ``torch.mm`` of one layer's GEMM shapes measured in the
same run. squeeze's energy meter (``EnergyMeter``) around the squeeze arm is read against the NVML energy counter
read here independently. Goals (#26): squeeze >= 1.0x HF Trainer and >= 0.9x the plain step.
Exits 2 without a CUDA device (``--smoke`` runs on the CPU).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT
from limits import _gemm_flops_per_s
from run import _recipe, _sweep

PEAK_BF16 = 989e12
WORDS = "the a film movie plot actor great bad boring brilliant scene story director music long short slow fast".split()


def _model_dir(tmp: Path, smoke: bool) -> Path:
    import transformers

    from squeeze.presets import minilm_path

    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())  # BERT's uncased vocabulary (30,522)
    cfg = (transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
           if smoke else transformers.BertConfig())
    cfg.num_labels = 2
    torch.manual_seed(0)
    folder = tmp / "bert-base-shaped"
    transformers.BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _prepared(tmp: Path, folder: Path, n: int, seq: int, batch: int, device: str, precision: str):
    from squeeze.prepare import prepare

    rng = random.Random(0)
    csv = tmp / "reviews.csv"
    with open(csv, "w") as fh:
        fh.write("text,label\n")
        for i in range(n + 64):  # every review longer than the sequence: no padding in any batch
            fh.write(" ".join(rng.choice(WORDS) for _ in range(seq + 20)) + f",{'pos' if i % 2 else 'neg'}\n")
    sweep = _sweep({"source": "files", "files": [str(csv)], "split": [0.99, 0.005, 0.005], "limit_train": n,
                    "limit_eval": 32}, model=str(folder), max_length=seq,
                   train={"batch_size": batch, "device": device, "precision": precision,
                          "num_threads": torch.get_num_threads()})  # the host threads HF's Trainer also has
    return sweep, prepare(sweep, tmp / "cache")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def plain_epoch(model, batches, device: str, dtype) -> float:
    """Seconds for one pass of plain steps over device-resident batches."""
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    for b in batches:
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - t0


def hf_epoch(folder: Path, rows: list[dict], batch: int, device: str, bf16: bool, tmp: Path) -> float:
    import datasets
    import transformers

    args = transformers.TrainingArguments(
        output_dir=str(tmp / "hf"), per_device_train_batch_size=batch, num_train_epochs=1, learning_rate=5e-5,
        max_grad_norm=1.0, bf16=bf16, optim="adamw_torch_fused", use_cpu=device == "cpu", report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows))
    _sync(device)
    t0 = time.perf_counter()
    trainer.train()
    _sync(device)
    return time.perf_counter() - t0


def _nvml_mj():
    """The NVML energy counter of GPU 0 in mJ, read without squeeze (None where there is none)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(pynvml.nvmlDeviceGetHandleByIndex(0))
    except Exception:  # noqa: BLE001 - no NVML, no counter: the comparison is reported as unavailable
        return None


def main() -> int:
    ap = argparse.ArgumentParser(prog="gpu_train")
    ap.add_argument("--out")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, a few steps (tests the script)")
    args = ap.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_train: no CUDA device here (torch.cuda.is_available() is False); nothing to measure", file=sys.stderr)
        return 2
    from squeeze import telemetry

    device = "cpu" if args.smoke else "cuda"
    seq, batch = (32, 8) if args.smoke else (128, 32)
    dtype, precision = (None, "fp32") if args.smoke else (torch.bfloat16, "bf16")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = _model_dir(tmp, args.smoke)
        import transformers

        model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).to(device)
        c = model.config
        n_params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
        step_flops = 6 * n_params * batch * seq + 12 * c.num_hidden_layers * c.hidden_size * seq * batch * seq
        ids = torch.randint(1000, 20000, (batch, seq), device=device)
        probe = [{"input_ids": ids, "attention_mask": torch.ones_like(ids),
                  "labels": torch.randint(0, 2, (batch,), device=device)}] * 10
        plain_epoch(model, probe, device, dtype)  # warm-up
        steps = 6 if args.smoke else max(50, math.ceil(args.seconds / (plain_epoch(model, probe, device, dtype) / 10)))
        sweep, prepared = _prepared(tmp, folder, steps * batch, seq, batch, device, precision)
        feats = prepared.features["train"][:steps * batch]
        rows = [{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"], "labels": f["labels"]} for f in feats]
        stacked = {k: torch.tensor([r[k] for r in rows], device=device) for k in ("input_ids", "attention_mask", "labels")}
        batches = [{k: v[i:i + batch] for k, v in stacked.items()} for i in range(0, len(rows), batch)]
        plain_s = [plain_epoch(model, batches, device, dtype) for _ in range(2)][1]
        del model
        squeeze_s, energy = [], {}
        for rep in range(2):
            loop = _recipe(sweep, prepared, tmp / "cache").loop
            meter = telemetry.EnergyMeter(gpu_ids=["0"]).start() if rep and device == "cuda" else None
            e0 = _nvml_mj() if meter else None
            _sync(device)
            t0 = time.perf_counter()
            _, pad, n = loop.train_epoch(0)
            _sync(device)
            squeeze_s.append(time.perf_counter() - t0)
            if meter:
                e1 = _nvml_mj()
                got = meter.stop().metrics()[0].get("energy/gpu_kwh")
                ref = (e1 - e0) / 3.6e9 if e0 is not None and e1 is not None else None
                energy = {"squeeze_gpu_kwh": got, "nvml_counter_kwh": ref,
                          "ratio": got / ref if got and ref else None}
        hf_s = [hf_epoch(folder, rows, batch, device, dtype is not None, tmp) for _ in range(2)][1]
        gemm = _gemm_flops_per_s(batch * seq, c.hidden_size, c.intermediate_size, device=device,
                                 dtype=dtype or torch.float32)
    n_steps = len(batches)
    if n != len(rows):
        raise AssertionError(f"squeeze's epoch saw {n} examples, the other arms {len(rows)}: not the same work")
    arms = {"plain": plain_s, "squeeze": squeeze_s[1], "hf": hf_s}
    out = {name: {"epoch_s": s, "samples_per_s": len(rows) / s, "step_ms": s / n_steps * 1e3,
                  "model_tflops": step_flops * n_steps / s / 1e12, "mfu_vs_989": step_flops * n_steps / s / PEAK_BF16,
                  "fraction_of_gemm": step_flops * n_steps / s / gemm} for name, s in arms.items()}
    from run import machine

    doc = {"date": datetime.date.today().isoformat(), "command": "benchmarks/gpu_train.py" + (" --smoke" if args.smoke else ""),
           "machine": machine(), "wall_s": time.perf_counter() - t_start,
           "shape": {"layers": c.num_hidden_layers, "hidden": c.hidden_size, "seq": seq, "batch": batch,
                     "non_embedding_params": n_params, "precision": precision, "steps_per_epoch": n_steps,
                     "padding_fraction": pad, "flops_per_step": step_flops},
           "arms": out, "gemm_tflops": gemm / 1e12,
           "squeeze_vs_hf": arms["hf"] / arms["squeeze"], "squeeze_vs_plain": arms["plain"] / arms["squeeze"],
           "goals": {"squeeze_vs_hf": ">= 1.0", "squeeze_vs_plain": ">= 0.9"}, "energy": energy or "no NVML here",
           "note": "each arm timed on its second epoch; MFU against 989 TFLOP/s dense bf16 and against plain torch.mm of "
                   "one layer's GEMM shapes (forward and both backward GEMMs) measured in this run"}
    doc["met"] = {"squeeze_vs_hf": doc["squeeze_vs_hf"] >= 1.0, "squeeze_vs_plain": doc["squeeze_vs_plain"] >= 0.9}
    gpu = "cpu-smoke" if args.smoke else torch.cuda.get_device_name(0).lower().replace(" ", "-")
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{doc['date']}-{gpu}-train.json"
    path.write_text(json.dumps(doc, indent=1))
    for name, r in out.items():
        print(f"{name:8s} {r['samples_per_s']:9.1f} samples/s  {r['step_ms']:7.2f} ms/step  MFU {r['mfu_vs_989']:.3f} "
              f"(of GEMM {r['fraction_of_gemm']:.2f})")
    print(f"squeeze / HF {doc['squeeze_vs_hf']:.3f}, squeeze / plain {doc['squeeze_vs_plain']:.3f}; energy {energy}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
