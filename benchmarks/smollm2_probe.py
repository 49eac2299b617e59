"""Two properties of the packaged SmolLM2-135M that the dialogue reproduction's PKD and DQ rows rest on.

    .venv/bin/python benchmarks/smollm2_probe.py

Token perplexity of the pre-trained model (no fine-tuning) on the first 256 tokens of WikiText-2 test
(``../shared/data/wikitext``, or squeeze's generated text where it is absent):
- students: the model cut to fewer layers before any training: PKD-Skip's student (the first k layers, Sun et al.'s
  initialisation, squeeze's ``families.truncate``) and two other choices of 15 layers;
- dq: ``quantize_dynamic`` int8 (squeeze's DQ: per-tensor weights, dynamic per-tensor activations) of every Linear,
  of the decoder layers only, of the LM head only.
Writes benchmarks/results/<date>-smollm2-probe.json with the machine described.
"""

from __future__ import annotations

import datetime
import json
import math
import time

import common  # noqa: F401  (offline, repository on sys.path)

ROOT = common.ROOT
DATA = ROOT.parent / "shared" / "data" / "wikitext" / "wiki.test.tokens"


def _text() -> tuple[str, str]:
    if DATA.is_file():
        return DATA.read_text(encoding="utf-8")[:6000], str(DATA.relative_to(ROOT.parent))
    from squeeze.data import synthetic

    return " ".join(r["text"] for r in synthetic.text(200, 0)), "squeeze.data.synthetic.text(200, 0)"


def main() -> None:
    import torch
    from torch import nn
    from torch.ao.quantization import quantize_dynamic
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from run import machine
    from squeeze import families, presets

    torch.set_num_threads(common.THREADS)
    t0 = time.perf_counter()
    path = presets.smollm2_path()
    tok = AutoTokenizer.from_pretrained(path)
    text, source = _text()
    ids = tok(text, return_tensors="pt")["input_ids"][:, :256]
    n = AutoModelForCausalLM.from_pretrained(path).config.num_hidden_layers
    choices = {"all layers": list(range(n)), "first 24 (truncate)": list(range(24)),
               "first 15 (truncate, PKD-Skip's student)": list(range(15)),
               "every other, ending at the last": list(range(1, n, 2)), "every other, from the first": list(range(0, n, 2))}
    rows = {}
    for name, keep in choices.items():
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        if keep == list(range(len(keep))):
            families.truncate(model, len(keep))
        else:
            model.model.layers = nn.ModuleList([model.model.layers[i] for i in keep])
            model.config.num_hidden_layers = len(keep)
            for j, layer in enumerate(model.model.layers):
                layer.self_attn.layer_idx = j
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        rows[name] = {"layers": keep, "token_ppl": math.exp(loss), "nll": loss}
        print(f"{name:45s} {len(keep):2d} layers  ppl {math.exp(loss):.4g}")
    dq = {}
    for name in ("fp32", "int8: every Linear", "int8: decoder layers only", "int8: LM head only"):
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        if name == "int8: every Linear":
            model = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        elif name == "int8: decoder layers only":
            model.model = quantize_dynamic(model.model, {nn.Linear}, dtype=torch.qint8)
        elif name == "int8: LM head only":
            model.lm_head = quantize_dynamic(nn.Sequential(model.lm_head), {nn.Linear}, dtype=torch.qint8)[0]
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        dq[name] = {"token_ppl": math.exp(loss), "nll": loss}
        print(f"{name:45s} ppl {math.exp(loss):.4g}")
    out = ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-smollm2-probe.json"
    out.write_text(json.dumps({"date": str(datetime.date.today()), "command": "benchmarks/smollm2_probe.py",
                               "machine": machine(), "wall_s": time.perf_counter() - t0, "text": source,
                               "tokens": int(ids.shape[1]), "model": "smollm2 (SmolLM2-135M-Instruct, 30 layers)",
                               "quantized_engine": torch.backends.quantized.engine, "students": rows, "dq": dq},
                              indent=1))
    print(out)


if __name__ == "__main__":
    main()
