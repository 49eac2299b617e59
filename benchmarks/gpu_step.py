"""Where a training step's time goes on a GPU: MiniLM at 32 x 256 tokens, written to
benchmarks/results/<date>-<gpu>-step.json.

    .venv/bin/python benchmarks/gpu_step.py [--out FILE]

1. ``raw``: plain PyTorch steps on one device-resident batch (no squeeze), fp32 and bf16 autocast: forward alone,
   forward + backward, and the whole step (clipping, fused AdamW);
2. ``squeeze``: squeeze's DataLoader alone over an epoch, ``Loop._step`` on batches already on the device, and
   ``Loop.train_epoch`` (DataLoader included) per step;
3. ``precision``: squeeze's loop in fp32, bf16 and fp16 (4 epochs of a fresh loop each, the first dropped);
4. ``compile``: eager vs ``train.compile`` in fp32 and bf16, one loop each, 4 epochs (epoch 0 compiles, 1-3 timed).

Inputs: 1,600 generated 300-word reviews in the ``files`` layout (a CSV), truncated to 256 tokens, so the batch
shape is fixed. Exits 2 without a CUDA device.
"""

from __future__ import annotations

import datetime
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, gpu_args
from run import _recipe, _sweep, cuda_epoch_speed

WORDS = "the a film movie plot actor great bad boring brilliant scene story director music long short slow fast".split()


def _long_inputs(tmp: str):
    from squeeze.prepare import prepare

    rng = random.Random(0)
    csv = Path(tmp) / "long.csv"
    with open(csv, "w") as fh:
        fh.write("text,label\n")
        for i in range(1600):
            fh.write(" ".join(rng.choice(WORDS) for _ in range(300)) + f",{'pos' if i % 2 else 'neg'}\n")
    sweep = _sweep({"source": "files", "files": [str(csv)], "limit_train": 1024, "limit_eval": 64}, max_length=256)
    return sweep, prepare(sweep, Path(tmp) / "cache")


def _timed(fn, n: int = 20) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def raw() -> dict:
    import transformers

    from squeeze import models
    from squeeze.presets import minilm_path

    out = {}
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    model = models.build_model("minilm", "AutoModelForSequenceClassification", tok, seed=0, labels=["neg", "pos"])
    model = model.cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(1000, 20000, (32, 256), device="cuda")
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (32,), device="cuda")}
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        def fwd_bwd():
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                loss = model(**batch).loss
            loss.backward()

        def full():
            fwd_bwd()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        def fwd():
            with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                model(**batch)

        out[f"raw_{precision}_ms"] = {"forward_no_grad": _timed(fwd), "forward_backward": _timed(fwd_bwd),
                                      "full_step": _timed(full)}
    out["tf32_matmul_allowed"] = torch.backends.cuda.matmul.allow_tf32
    out["threads"] = torch.get_num_threads()
    return out


def squeeze_loop(sweep, prepared, tmp: str) -> dict:
    from squeeze.tasks.base import to_device

    out = {}
    loop = _recipe(sweep, prepared, tmp, device="cuda", precision="fp32", batch_size=32, epochs=4).loop
    for epoch in range(2):
        t0 = time.perf_counter()
        n = sum(1 for _ in loop._batches(epoch))
        dt = time.perf_counter() - t0
    out["squeeze_dataloader_only"] = {"batches": n, "ms_per_batch": dt / n * 1e3, "num_workers": loop.num_workers}
    batches = [to_device(b, loop.device) for _, b in loop._batches(0)]
    loop.train_epoch(0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches:
        loop._step(b, [])
    torch.cuda.synchronize()
    out["squeeze_step_on_device_batches_ms"] = (time.perf_counter() - t0) / len(batches) * 1e3
    t0 = time.perf_counter()
    loop.train_epoch(1)
    torch.cuda.synchronize()
    out["squeeze_train_epoch_ms_per_step"] = (time.perf_counter() - t0) / len(batches) * 1e3
    return out


def precision(sweep, prepared, tmp: str) -> dict:
    speed = {}
    for name in ("fp32", "bf16", "fp16"):
        speed[name] = cuda_epoch_speed(sweep, prepared, tmp, 3, precision=name, batch_size=32)
    f = statistics.median(speed["fp32"])
    return {"batch32_len256": {"samples_per_s": speed, "bf16_vs_fp32": statistics.median(speed["bf16"]) / f,
                               "fp16_vs_fp32": statistics.median(speed["fp16"]) / f}}


def compiled(sweep, prepared, tmp: str) -> dict:
    out = {}
    for compile_ in (False, True):
        for name in ("fp32", "bf16"):
            key = f"{'compiled' if compile_ else 'eager'}_{name}"
            try:
                loop = _recipe(sweep, prepared, tmp, device="cuda", precision=name, batch_size=32, epochs=4,
                               compile=compile_).loop
                sps, first = [], None
                for epoch in range(4):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    _, _, n = loop.train_epoch(epoch)
                    torch.cuda.synchronize()
                    dt = time.perf_counter() - t0
                    if epoch == 0:
                        first = dt
                    else:
                        sps.append(n / dt)
                out[key] = {"samples_per_s": sps, "median": statistics.median(sps), "first_epoch_s": first}
            except Exception as exc:  # one failing configuration must not hide the others
                out[key] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
    base = out.get("eager_fp32", {}).get("median")
    for v in out.values():
        if "median" in v and base:
            v["vs_eager_fp32"] = v["median"] / base
    return out


def main() -> int:
    args = gpu_args("gpu_step")
    if args is None:
        return 2
    from run import machine

    gpu = torch.cuda.get_device_name(0)
    results = {"raw": raw()}
    with tempfile.TemporaryDirectory() as tmp:
        sweep, prepared = _long_inputs(tmp)
        results["squeeze"] = squeeze_loop(sweep, prepared, tmp)
        results["precision"] = precision(sweep, prepared, tmp)
        results["compile"] = compiled(sweep, prepared, tmp)
    date = datetime.date.today().isoformat()
    out = args.out or str(ROOT / "benchmarks" / "results" / f"{date}-{gpu.replace(' ', '-').lower()}-step.json")
    doc = {"date": date, "gpu": gpu, "cuda": torch.version.cuda, "machine": machine(), "results": results}
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
