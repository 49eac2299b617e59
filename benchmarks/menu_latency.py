"""CPU latency of each stored form in the runtime that serves it, against fp32 in the same run: MiniLM-L6 as a
sentiment classifier (pre-trained encoder, seeded head: timing only, never scored), batch 1 and 8 at 128 tokens.

    .venv/bin/python benchmarks/menu_latency.py

Forms: fp32 (torch); DQ int8 (torch.ao) and DQ through ONNX Runtime; SmoothQuant W8A8 (torch.ao after input
scales); RTN int4 g128 and int8 per-row served by ONNX Runtime MatMulNBits (``formats.of(model).serving``: the
graph holds the model's own integers); the same int4 model in torch (dequantize + fp32 GEMM); SparseGPT 50% and 2:4
(torch dense kernels). Size = bytes of the saved weight file. Writes benchmarks/results/<date>-menu-latency.json.
"""

from __future__ import annotations

import datetime
import json
import tempfile
import time

import common  # noqa: F401  (offline, repository on sys.path)

ROOT = common.ROOT
SEQ = 128


def main() -> None:
    import torch
    import transformers

    from run import machine
    from squeeze import formats, measure, presets
    from squeeze.formats import onnx_int8
    from squeeze.registry import get_technique_class
    from squeeze.techniques.dq import quantize as dq

    torch.set_num_threads(common.THREADS)
    t0 = time.perf_counter()
    path = presets.minilm_path()

    def fresh():
        torch.manual_seed(0)
        return transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()

    g = torch.Generator().manual_seed(0)
    batches = {b: {"input_ids": torch.randint(1000, 20000, (b, SEQ), generator=g),
                   "attention_mask": torch.ones(b, SEQ, dtype=torch.long),
                   "token_type_ids": torch.zeros(b, SEQ, dtype=torch.long)} for b in (1, 8)}
    calib = [{"input_ids": torch.randint(1000, 20000, (1, SEQ), generator=g)} for _ in range(32)]

    def oneshot(name, **params):
        cls = get_technique_class(name)
        t = cls(None)
        t.p = cls.Params(**params)
        return t.compress(fresh(), calib if t.uses_calibration else [])

    forms = {
        "fp32": lambda: fresh(),
        "dq int8 (torch.ao)": lambda: dq(fresh(), embeddings=False)[0],
        "dq int8 (onnxruntime)": lambda: onnx_int8.quantize(fresh(), batches[8], batches[1], embeddings=False),
        "smoothquant W8A8 (torch.ao)": lambda: oneshot("smoothquant", alpha=0.5),
        "rtn int4 g128": lambda: oneshot("rtn", bits=4, group_size=128),
        "rtn int8 per-row": lambda: oneshot("rtn", bits=8, group_size=-1),
        "sparsegpt 50%": lambda: oneshot("sparsegpt", sparsity=0.5),
        "sparsegpt 2:4": lambda: oneshot("sparsegpt", pattern="2:4"),
    }
    rows = {}
    for name, build in forms.items():
        model = build()
        codec = formats.of(model)
        with tempfile.TemporaryDirectory() as tmp:
            formats.save(model, tmp, auto_class="AutoModelForSequenceClassification")
            disk = formats.disk_bytes(tmp) / 2**20
        served, runtime = codec.serving(model, batches[8])
        variants = {name: (served, runtime)}
        if name.startswith("rtn"):
            variants[f"{name} in torch"] = (model, "torch dequantize + fp32 GEMM")
        for label, (m, line) in variants.items():
            row = {"codec": codec.name, "runtime": line, "disk_mb": disk}
            for b, batch in batches.items():
                with torch.no_grad():
                    t = measure.time_cpu(lambda: m(**batch), warmup=2, repeats=10, threads=common.THREADS)
                row[f"batch{b}_ms"] = t["median_ms"]
            rows[label] = row
            print(f"{label:34s} {row['disk_mb']:7.1f} MB  b1 {row['batch1_ms']:7.1f} ms  b8 {row['batch8_ms']:7.1f} ms"
                  f"  [{line}]", flush=True)
    base = rows["fp32"]
    for row in rows.values():
        row["size_ratio"] = row["disk_mb"] / base["disk_mb"]
        row["speedup_batch1"] = base["batch1_ms"] / row["batch1_ms"]
        row["speedup_batch8"] = base["batch8_ms"] / row["batch8_ms"]
    out = {"date": datetime.date.today().isoformat(), "command": "benchmarks/menu_latency.py", "machine": machine(),
           "wall_s": time.perf_counter() - t0, "model": "minilm (MiniLM-L6, BERT family, 22.7M) + seeded 2-class head",
           "input": f"random token ids, {SEQ} tokens, batch 1 and 8; median of 10 after 2 warm-up calls",
           "threads": common.THREADS, "rows": rows}
    path_out = ROOT / "benchmarks" / "results" / f"{out['date']}-menu-latency.json"
    path_out.write_text(json.dumps(out, indent=1))
    print(f"wrote {path_out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
