"""llm-compressor's own RTN / GPTQ / AWQ / SparseGPT / Wanda on SmolLM2-135M, under menu_quality.py's settings,
beside squeeze's numbers (benchmarks/results/2026-12-06-menu-quality.json, and
2026-12-07-menu-quality-g64.json from ``menu_quality.py --group-size 64``): the cross-check of squeeze's own
implementations against the maintained library at the size real runs use.

llm-compressor 0.14 pins transformers<=5.17 and compressed-tensors==0.19, squeeze's environment has newer ones, so
this runs in a venv of its own and imports nothing from squeeze (the model folder is squeeze's SmolLM2 conversion):

    python3 -m venv /tmp/lcvenv && /tmp/lcvenv/bin/pip install torch==2.13.0 llmcompressor==0.14.0.1
    /tmp/lcvenv/bin/python benchmarks/llmcompressor_check.py \
        --model "$(.venv/bin/python -c 'from squeeze import presets; print(presets.smollm2_path())')"

The same calibration (64 segments of 512 tokens drawn with seed 0 from WikiText-2 valid), the same evaluation
(menu_quality.perplexity: the first 16,384 tokens of WikiText-2 test, context = stride = 512), the same grid as
squeeze's defaults (int4, asymmetric, groups of 128 or one scale per row, lm_head kept; GPTQ damping 0.01 of the
mean Hessian diagonal with static activation order: llm-compressor's defaults too). Writes
benchmarks/results/<date>-llmcompressor-check.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (offline, repository on sys.path)
from menu_quality import CONTEXT, WIKI, perplexity

ROOT = common.ROOT
OURS = [ROOT / "benchmarks" / "results" / f for f in ("2026-12-06-menu-quality.json", "2026-12-07-menu-quality-g64.json")]


def _cpu() -> str:  # squeeze.provenance.cpu_model's reading, without importing squeeze (not in this venv)
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    return next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), platform.machine())


def _weights(group: int) -> dict:
    return {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group" if group > 0 else "channel",
            **({"group_size": group} if group > 0 else {})}


def recipes() -> dict:
    """Row name (as in squeeze's file) -> a function making the llm-compressor modifier."""
    from llmcompressor.modifiers.awq import AWQModifier
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    def groups(g):
        return {"group_0": {"targets": ["Linear"], "weights": _weights(g)}}

    # SmolLM2's 576 input columns are 4.5 groups of 128: llm-compressor 0.14 refuses that, and with its divisibility
    # check bypassed its observer fails (unflatten [-1, 128] of 576); squeeze quantizes the last 64 columns of a row
    # as a group of their own. Groups of 64 (9 per row) and one scale per row are what both run.
    kw = {"ignore": ["lm_head"]}
    out = {}
    for g, tag in ((64, "g64"), (-1, "g-1")):
        out[f"rtn W4 {tag}"] = lambda g=g: QuantizationModifier(config_groups=groups(g), **kw)
        out[f"gptq W4 {tag}"] = lambda g=g: GPTQModifier(config_groups=groups(g), **kw)
        out[f"awq W4 {tag}"] = lambda g=g: AWQModifier(config_groups=groups(g), **kw)
    # the pruning modifiers name a target Linear "lm_head." (with a dot), which ignore=["lm_head"] (the quantizers'
    # spelling) does not match, and prune the lm_head, tied to the input embeddings in SmolLM2, too; the extra row
    # shows what that costs, the others keep the lm_head as squeeze does
    prune_ignore = ["re:.*lm_head"]
    for key, structure in (("50%", "0:0"), ("2:4", "2:4")):
        out[f"sparsegpt {key}"] = lambda s=structure: SparseGPTModifier(sparsity=0.5, mask_structure=s,
                                                                        ignore=prune_ignore)
        out[f"wanda {key}"] = lambda s=structure: WandaPruningModifier(sparsity=0.5, mask_structure=s,
                                                                       ignore=prune_ignore)
    out["wanda 50% | ignore=['lm_head']"] = lambda: WandaPruningModifier(sparsity=0.5, mask_structure="0:0",
                                                                         ignore=["lm_head"])
    return out


def layer_check(model: str) -> dict:
    """squeeze's grid and GPTQ solve (``squeeze.oneshot``: plain torch, imported from the repository) against
    compressed-tensors' qparams and llm-compressor's ``quantize_weight`` on one real layer of the model, int4
    asymmetric, groups of 64, under one Hessian of correlated synthetic inputs (4,096 rows, seed 0)."""
    import torch
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils import calculate_qparams
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
    from safetensors.torch import load_file

    from squeeze.oneshot import grid, solvers

    name = "model.layers.5.mlp.up_proj.weight"
    W = load_file(str(Path(model) / "model.safetensors"))[name].float()
    out = {"layer": name, "shape": list(W.shape)}

    def qargs(actorder=None):
        return QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=64,
                                actorder=actorder)

    def params(w):
        g = w.reshape(w.shape[0], -1, 64)
        return calculate_qparams(g.amin(-1), g.amax(-1), qargs())

    scale, zp = params(W)
    q, s, z = grid.rtn(W, 4, 64, False)
    ours = grid.from_int(q, grid.expand(s, 64, W.shape[1]), grid.expand(z, 64, W.shape[1]))
    theirs = fake_quantize(W, scale, zp, qargs())
    out["rtn"] = {"scales_equal": bool(torch.equal(s, scale)), "zero_points_equal": bool(torch.equal(z - 8, zp.float())),
                  "values_differing": int((ours != theirs).sum()), "values": W.numel(),
                  "at_a_tie": int(((ours != theirs) & ((W / grid.expand(s, 64, W.shape[1])).frac().abs() == 0.5)).sum())}
    W = W[:256].contiguous()  # GPTQ: a slice of the layer (the solve is per row)
    gen = torch.Generator().manual_seed(0)
    X = (torch.randn(4096, W.shape[1], generator=gen) @ (torch.randn(W.shape[1], W.shape[1], generator=gen) * 0.2
                                                          + torch.eye(W.shape[1]))) * torch.rand(W.shape[1], generator=gen) * 3
    H = 2 / 4096 * X.T @ X

    def err(Q):
        D = W - Q
        return float(torch.einsum("ij,jk,ik->", D, H, D))

    scale, zp = params(W)
    q, s, z = grid.rtn(W, 4, 64, False)
    rtn = grid.from_int(q, grid.expand(s, 64, W.shape[1]), grid.expand(z, 64, W.shape[1]))
    out["gptq"] = {"rows": W.shape[0], "rtn_output_error": err(rtn)}
    for act_order, actorder in ((True, "static"), (False, None)):
        mine = solvers.gptq(W, H, bits=4, group=64, sym=False, percdamp=0.01, act_order=act_order)[3]
        lc = quantize_weight(W.unsqueeze(0).clone(), H.unsqueeze(0).clone(), scale.unsqueeze(0), zp.unsqueeze(0), None,
                             qargs(actorder), blocksize=128, percdamp=0.01)[0][0]
        out["gptq"]["act_order" if act_order else "no_act_order"] = {
            "values_differing": int((mine != lc).sum()), "squeeze_output_error": err(mine), "llmcompressor_output_error": err(lc)}
    return out


def main() -> None:
    import llmcompressor
    import torch
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="squeeze's SmolLM2-135M folder (presets.smollm2_path())")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--only", default="", help="comma-separated row names (fp32 always)")
    ap.add_argument("--layer-check", action="store_true",
                    help="only the one-layer comparison (seconds), added to this date's JSON as layer_check")
    args = ap.parse_args()
    if args.layer_check:
        found = layer_check(args.model)
        print(json.dumps(found, indent=1))
        path = ROOT / "benchmarks" / "results" / f"{datetime.date.today().isoformat()}-llmcompressor-check.json"
        doc = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**doc, "layer_check": found}, indent=1))
        return
    torch.set_num_threads(common.THREADS)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    test = tok((WIKI / "wiki.test.tokens").read_text(encoding="utf-8"), return_tensors="pt")["input_ids"][:, :args.tokens]
    valid = tok((WIKI / "wiki.valid.tokens").read_text(encoding="utf-8"), return_tensors="pt")["input_ids"][0]
    rng = random.Random(0)  # menu_quality's draw, segment for segment
    starts = [rng.randrange(0, len(valid) - CONTEXT) for _ in range(args.calibration)]
    calib = Dataset.from_dict({"input_ids": [valid[s:s + CONTEXT].tolist() for s in starts],
                               "attention_mask": [[1] * CONTEXT for _ in starts]})

    # the conversion's config.json still names the GGUF it came from (its weights are fp32), which oneshot refuses:
    # a copy of the folder without that entry, weights linked
    folder = Path(tempfile.mkdtemp())
    for f in Path(args.model).iterdir():
        (folder / f.name).symlink_to(f.resolve())
    config = json.loads((folder / "config.json").read_text())
    assert config.pop("quantization_config", {"quant_method": "gguf"})["quant_method"] == "gguf"
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))

    def fresh():
        return AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()

    ours = {k: v for f in OURS for k, v in json.loads(f.read_text())["rows"].items()}  # the g64 rows: --group-size 64
    rows = {"fp32": {"ppl": perplexity(fresh(), test), "squeeze_ppl": ours["fp32"]["ppl"]}}
    print(f"{'fp32':20s} ppl {rows['fp32']['ppl']:.3f} (squeeze's file: {ours['fp32']['ppl']:.3f})", flush=True)
    only = set(filter(None, args.only.split(",")))
    for name, make in recipes().items():
        if only and name not in only:
            continue
        base = name.split(" | ")[0]  # the squeeze row it is compared with
        model = fresh()
        t = time.perf_counter()
        try:
            oneshot(model=model, dataset=calib, recipe=[make()], num_calibration_samples=args.calibration,
                    max_seq_length=CONTEXT, shuffle_calibration_samples=False)
        except Exception as exc:  # noqa: BLE001  (what the library cannot do here is a result too)
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:300], "squeeze_ppl": ours[base]["ppl"]}
            print(f"{name:20s} llm-compressor failed: {rows[name]['error']}", flush=True)
            continue
        seconds = time.perf_counter() - t
        model.eval()
        ppl = perplexity(model, test)
        zeros = [float((m.weight == 0).float().mean()) for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
        head = model.get_output_embeddings().weight
        rows[name] = {"ppl": ppl, "seconds": seconds, "squeeze_ppl": ours[base]["ppl"],
                      "squeeze_seconds": ours[base]["seconds"], "mean_zero_fraction": sum(zeros) / len(zeros),
                      "lm_head_zero_fraction": float((head == 0).float().mean()),
                      "lm_head_tied_to_embeddings": head.data_ptr() == model.get_input_embeddings().weight.data_ptr()}
        print(f"{name:20s} ppl {ppl:.3f} (squeeze {ours[base]['ppl']:.3f}), {seconds:.0f} s", flush=True)
    out = {"date": datetime.date.today().isoformat(),
           "command": f"benchmarks/llmcompressor_check.py --tokens {args.tokens} --calibration {args.calibration}"
                      + (f" --only {args.only}" if only else ""),
           "machine": {"cpu": _cpu(), "threads": common.THREADS,
                       "python": platform.python_version(), "torch": torch.__version__,
                       "transformers": transformers.__version__, "llmcompressor": llmcompressor.__version__},
           "wall_s": time.perf_counter() - t0, "squeeze_files": [str(f.relative_to(ROOT)) for f in OURS],
           "eval": {"data": "WikiText-2 test", "tokens": int(test.shape[1]), "context": CONTEXT, "stride": CONTEXT},
           "calibration": {"data": "WikiText-2 valid", "segments": args.calibration, "tokens_each": CONTEXT, "seed": 0},
           "rows": rows}
    path = ROOT / "benchmarks" / "results" / f"{out['date']}-llmcompressor-check{'-partial' if only else ''}.json"
    Path(path).write_text(json.dumps(out, indent=1))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
