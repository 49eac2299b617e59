"""Hits@k ranking on a shared prompt cache against whole sequences (the dialogue task's final evaluation).

    .venv/bin/python benchmarks/rank_cache.py [--turns 20]

The packaged SmolLM2-135M (pre-trained, speaker tokens added) scores the 20 candidates of ``--turns`` ConvAI2 test
turns from ``../shared/data/personachat`` (or squeeze's generated dialogues where it is absent), at the dialogue
repro's max length (96): once through ``DialogueTask._candidate_scores`` (the prompt runs once, its key/value cache
repeated for the candidates) and once through ``_joined_scores`` (20 whole sequences per turn), best of 2 each.
Writes benchmarks/results/<date>-rank-cache.json with the machine described and the largest score difference.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

import common  # noqa: F401  (offline, repository on sys.path)

ROOT = common.ROOT
DATA = ROOT.parent / "shared" / "data" / "personachat" / "valid_self_original.part2.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=20)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from run import machine
    from squeeze import presets
    from squeeze.data import synthetic
    from squeeze.data.parlai import read_parlai
    from squeeze.tasks.dialogue import DialogueTask

    torch.set_num_threads(common.THREADS)
    if DATA.is_file():
        rows, source = read_parlai(DATA), str(DATA.relative_to(ROOT.parent))
    else:
        rows, source = synthetic.dialogue(400, 0), "squeeze.data.synthetic.dialogue(400, 0)"
    rows = [r for r in rows if r["candidates"]]
    rows = rows[:: max(1, len(rows) // args.turns)][: args.turns]
    task = DialogueTask()
    path = presets.smollm2_path()
    tok = task.prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    model.resize_token_embeddings(len(tok))
    feats = task.encode(rows, tok, None, 96)
    max_length = max(len(f["input_ids"]) for f in feats) + 64  # as DialogueTask.evaluate

    def timed(fn):
        best, scores = float("inf"), None
        for _ in range(2):
            t0 = time.perf_counter()
            with torch.no_grad():
                scores = [fn(model, tok, f, "cpu", max_length) for f in feats]
            best = min(best, time.perf_counter() - t0)
        return best, scores

    cached_s, cached = timed(task._candidate_scores)
    joined_s, joined = timed(task._joined_scores)
    diff = max(abs(a - b) for ca, cb in zip(cached, joined) for a, b in zip(ca, cb))
    result = {"turns": len(feats), "candidates_per_turn": len(feats[0]["candidates"]), "shared_cache_s": cached_s,
              "whole_sequences_s": joined_s, "speedup": joined_s / cached_s, "max_abs_score_diff": diff}
    print(result)
    out = ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-rank-cache.json"
    out.write_text(json.dumps({"date": str(datetime.date.today()), "command": f"benchmarks/rank_cache.py --turns {args.turns}",
                               "machine": machine(), "data": source, "model": "smollm2 (pre-trained, speaker tokens added)",
                               "threads": common.THREADS, **result}, indent=1))
    print(out)


if __name__ == "__main__":
    main()
