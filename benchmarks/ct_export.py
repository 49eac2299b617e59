"""SmolLM2-135M through the compressed-tensors export (``squeeze.formats.compressed_tensors``): RTN int4 (groups of 64,
symmetric: 576 inputs admit no group of 128 there) written as ``pack-quantized``, reloaded through
``AutoModelForCausalLM.from_pretrained``, logits compared on 2 x 12 random tokens. Writes
benchmarks/results/<date>-ct-export.json with the machine described.

    .venv/bin/python benchmarks/ct_export.py
"""

from __future__ import annotations

import datetime
import json
import tempfile
import time
from pathlib import Path

import common

ROOT = common.ROOT


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from run import machine
    from squeeze import presets
    from squeeze.formats import compressed_tensors
    from squeeze.registry import get_technique_class

    torch.set_num_threads(common.THREADS)
    rtn = get_technique_class("rtn")(None)
    rtn.p = rtn.Params(bits=4, group_size=64, sym=True)
    model = rtn.compress(AutoModelForCausalLM.from_pretrained(presets.smollm2_path()).eval(), [])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        compressed_tensors.export(model, tmp)
        seconds = time.perf_counter() - t0
        files = {p.name: p.stat().st_size / 2**20 for p in Path(tmp).iterdir()}
        diff = compressed_tensors._check(model, Path(tmp))
        cfg = json.loads((Path(tmp) / "config.json").read_text())["quantization_config"]
    out = {"date": datetime.date.today().isoformat(), "command": "benchmarks/ct_export.py", "machine": machine(),
           "model": "SmolLM2-135M-Instruct, RTN int4 g64 symmetric", "export_and_check_s": seconds,
           "folder_mb": sum(files.values()), "files_mb": files, "max_logit_diff_relative": diff,
           "format": cfg["format"], "compressed_tensors": cfg["version"],
           "targets": sum(len(g["targets"]) for g in cfg["config_groups"].values())}
    path = ROOT / "benchmarks" / "results" / f"{out['date']}-ct-export.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
