"""Quality of the one-shot menu on SmolLM2-135M: WikiText-2 test perplexity of fp32, RTN / GPTQ / AWQ W4 g128,
magnitude / Wanda / SparseGPT at 50% and 2:4 and fp8 W8A8, next to the published anchors.

    .venv/bin/python benchmarks/menu_quality.py [--tokens 16384] [--calibration 64] [--only fp8,rtn] [--group-size 64]

Each technique is squeeze's own (``squeeze.techniques.oneshot``, the code a trial runs), on the pre-trained model
(no fine-tuning). Calibration: ``--calibration`` segments of 512 tokens drawn (seed 0) from WikiText-2 *valid*;
evaluation: the first ``--tokens`` tokens of WikiText-2 *test* in non-overlapping windows of 512 (stride = context
= 512, the first token of each window unscored), token perplexity. Also the CPU latency of one 128-token forward at
batch 1 and 8 through ``formats.of(model).serving`` (torch for a causal LM: the line says whether a fast kernel ran).
Writes benchmarks/results/<date>-menu-quality.json with the machine described. Needs ../shared/data/wikitext.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import time

import common  # noqa: F401  (offline, repository on sys.path)

ROOT = common.ROOT
WIKI = ROOT.parent / "shared" / "data" / "wikitext"
CONTEXT = 512

# published anchors (the issue's): Llama-2-7B W4 g128 wikitext-2 ppl; 50% unstructured; Qwen3-0.6B W4 per-row
ANCHORS = {"Llama-2-7B W4 g128 (fp16 5.47)": {"rtn": 5.72, "gptq": 5.61, "awq": 5.62},
           "Llama-2-7B 50% unstructured (dense 5.12)": {"magnitude": 14.89, "sparsegpt": 6.51, "wanda": 6.42},
           "Qwen3-0.6B W4 per-row (12.7)": {"rtn": 24.0, "gptq": 18.2, "awq": 15.6}}

MENU = [("rtn", {"bits": 4, "group_size": 128}), ("gptq", {"bits": 4, "group_size": 128}),
        ("gptq", {"bits": 4, "group_size": 128, "act_order": False}),
        ("awq", {"bits": 4, "group_size": 128}), ("rtn", {"bits": 4, "group_size": -1}),
        ("gptq", {"bits": 4, "group_size": -1}), ("awq", {"bits": 4, "group_size": -1}),
        ("magnitude", {"sparsity": 0.5}), ("wanda", {"sparsity": 0.5}), ("sparsegpt", {"sparsity": 0.5}),
        ("magnitude", {"pattern": "2:4"}), ("wanda", {"pattern": "2:4"}), ("sparsegpt", {"pattern": "2:4"}),
        # fp8 W8A8 (FP8_DYNAMIC); without an fp8 GPU, torch's reference kernel: the same arithmetic, so the same ppl
        ("fp8", {"emulate": True})]


def perplexity(model, ids) -> float:
    import torch

    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, ids.shape[1] - 1, CONTEXT):
            window = ids[:, i:i + CONTEXT]
            if window.shape[1] < 2:
                break
            loss = model(input_ids=window, labels=window).loss.item()
            nll += loss * (window.shape[1] - 1)
            count += window.shape[1] - 1
    return math.exp(nll / count)


def latency(model, vocab: int) -> dict:
    import torch

    from squeeze import formats, measure

    served, line = formats.of(model).serving(model)
    out = {"runtime": line}
    for batch in (1, 8):
        ids = torch.randint(0, vocab, (batch, 128), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            t = measure.time_cpu(lambda: served(input_ids=ids), warmup=1, repeats=3, threads=common.THREADS)
        out[f"batch{batch}_ms"] = t["median_ms"]
    return out


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from run import machine
    from squeeze import formats, presets
    from squeeze.registry import get_technique_class

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--only", default="", help="comma-separated techniques (fp32 always): a partial run, its own file")
    ap.add_argument("--group-size", type=int, default=128,
                    help="the W4 g128 rows at this group size instead (those rows only: a partial run, its own file)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    menu = MENU
    if args.group_size != 128:
        menu = [(n, {**p, "group_size": args.group_size}) for n, p in MENU if p.get("group_size") == 128]
        only = only or {n for n, _ in menu}
    if not WIKI.is_dir():
        raise SystemExit(f"{WIKI} not found: this benchmark reads WikiText-2 from ../shared/data/wikitext")
    torch.set_num_threads(common.THREADS)
    t0 = time.perf_counter()
    path = presets.smollm2_path()
    tok = AutoTokenizer.from_pretrained(path)
    test = tok((WIKI / "wiki.test.tokens").read_text(encoding="utf-8"), return_tensors="pt")["input_ids"][:, :args.tokens]
    valid = tok((WIKI / "wiki.valid.tokens").read_text(encoding="utf-8"), return_tensors="pt")["input_ids"][0]
    rng = random.Random(0)
    starts = [rng.randrange(0, len(valid) - CONTEXT) for _ in range(args.calibration)]
    batches = [{"input_ids": valid[s:s + CONTEXT].unsqueeze(0)} for s in starts]

    def fresh():
        return AutoModelForCausalLM.from_pretrained(path).eval()

    rows = {}
    model = fresh()
    rows["fp32"] = {"ppl": perplexity(model, test), "disk_mb": None, **latency(model, tok.vocab_size)}
    print(f"{'fp32':32s} ppl {rows['fp32']['ppl']:.3f}", flush=True)
    for name, params in menu:
        if only and name not in only:
            continue
        cls = get_technique_class(name)
        technique = cls(None)
        technique.p = cls.Params(**params)
        model = fresh()
        model = technique.compress(model, batches if technique.uses_calibration else [])
        key = f"{name} " + (f"W{params['bits']} g{params['group_size']}" if "bits" in params else "W8A8" if name == "fp8"
                            else params.get("pattern") or f"{params['sparsity']:.0%}")
        key += "" if params.get("act_order", True) else " no act-order"
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            formats.save(model, tmp, auto_class="AutoModelForCausalLM")
            disk = formats.disk_bytes(tmp) / 2**20
        rows[key] = {"ppl": perplexity(model, test), "seconds": technique.info["oneshot/seconds"], "disk_mb": disk,
                     **{k: v for k, v in technique.info.items() if k.startswith("prune/")}, **latency(model, tok.vocab_size)}
        print(f"{key:32s} ppl {rows[key]['ppl']:.3f}  ({technique.info['oneshot/seconds']:.0f} s)", flush=True)
    base = rows["fp32"]["ppl"]
    ratios = {}
    for family, (a, b) in {"W4 g128": ("gptq W4 g128", "awq W4 g128"), "W4 per-row": ("gptq W4 g-1", "awq W4 g-1")}.items():
        if only:  # a partial run: the ratios are the full run's
            break
        rtn = rows[f"rtn {family.replace('per-row', 'g-1').replace('W4 ', 'W4 ')}"]["ppl"] - base
        ratios[f"gptq/rtn increase, {family}"] = (rows[a]["ppl"] - base) / rtn
        ratios[f"awq/rtn increase, {family}"] = (rows[b]["ppl"] - base) / rtn
    for pattern in () if only else ("50%", "2:4"):
        mag = rows[f"magnitude {pattern}"]["ppl"] - base
        ratios[f"sparsegpt/magnitude increase, {pattern}"] = (rows[f"sparsegpt {pattern}"]["ppl"] - base) / mag
        ratios[f"wanda/magnitude increase, {pattern}"] = (rows[f"wanda {pattern}"]["ppl"] - base) / mag
    out = {"date": datetime.date.today().isoformat(), "command": "benchmarks/menu_quality.py "
           f"--tokens {args.tokens} --calibration {args.calibration}", "machine": machine(),
           "wall_s": time.perf_counter() - t0, "model": "smollm2 (SmolLM2-135M-Instruct, fp32 from the Q4_1 GGUF)",
           "eval": {"data": "WikiText-2 test (wiki.test.tokens)", "tokens": int(test.shape[1]), "context": CONTEXT,
                    "stride": CONTEXT, "metric": "token perplexity"},
           "calibration": {"data": "WikiText-2 valid", "segments": args.calibration, "tokens_each": CONTEXT, "seed": 0},
           "rows": rows, "increase_ratios": ratios, "anchors": ANCHORS,
           "goal": "GPTQ/AWQ at most half of RTN's perplexity increase; SparseGPT/Wanda at most half of magnitude's"}
    suffix = f"-g{args.group_size}" if args.group_size != 128 else f"-{'-'.join(sorted(only))}" if only else ""
    out["command"] += f" --only {args.only}" if args.only else ""
    out["command"] += f" --group-size {args.group_size}" if args.group_size != 128 else ""
    path_out = ROOT / "benchmarks" / "results" / f"{out['date']}-menu-quality{suffix}.json"
    path_out.write_text(json.dumps(out, indent=1))
    print(json.dumps(ratios, indent=1))
    print(f"wrote {path_out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
