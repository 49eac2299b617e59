"""Does PKD learn on real data with the paper's hyperparameter grid? (the correctness issue's check)

    .venv/bin/python benchmarks/pkd_check.py [--quick]

Sentiment: the packaged MiniLM fine-tuned on the IMDB sample in ../shared/data/imdb (the teacher), then 3-layer
students distilled with PKD at alpha 0.5, T 10 and each beta of Sun et al.'s grid {10, 100, 500, 1000}, against an
undistilled 3-layer student (alpha = beta = 0) and the majority class. Dialogue: a 4-layer GPT-2 trained from scratch
on the ConvAI2 sample in ../shared/data/personachat (the repro's stand-in), then a 2-layer PKD student with the
teacher's top-k logits against an undistilled 2-layer student. Everything runs through squeeze's own Recipe (the
trial minus Ray and MLflow). Writes benchmarks/results/<date>-pkd-check.json with the machine described.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def _sweep(doc: dict):
    from squeeze import config

    return config.parse({"experiment": "pkd-check", "sweeps": [{"name": "s", "measure": {"latency": False}, **doc}]}).sweeps[0]


def _run(sweep, prepared, cache: Path, out: Path) -> dict:
    from squeeze.recipe import Recipe

    t0 = time.perf_counter()
    r = Recipe(sweep, prepared, cache_dir=cache)
    for _ in r.fit():
        pass
    final = r.finish(out)
    return {**{k: v for k, v in final.metrics.items() if k.startswith(("test/", "val/", "best/"))},
            "train_s": time.perf_counter() - t0}


def sentiment(cache: Path, quick: bool) -> dict:
    from squeeze.prepare import prepare

    n = 200 if quick else 800
    base = {"task": "sentiment", "model": {"name": "minilm"},
            "data": {"source": "files", "files": [str(DATA / "imdb" / "train.csv"), str(DATA / "imdb" / "test.csv")],
                     "split": [0.5, 0.25, 0.25], "limit_train": n, "limit_eval": 200},
            "train": {"epochs": 1 if quick else 3, "batch_size": 16, "eval_batch_size": 64, "max_length": 128,
                      "lr": 1e-4, "num_threads": 2}}
    teacher_cfg = _sweep(base)
    prepared = prepare(teacher_cfg, cache)
    out = {"n_train": n, "majority": None, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        out["runs"]["teacher (6 layers)"] = _run(teacher_cfg, prepared, cache, Path(tmp) / "teacher")
        out["majority"] = out["runs"]["teacher (6 layers)"]["test/chance_accuracy"]
        teacher = str(Path(tmp) / "teacher" / "model")
        students = {"undistilled (alpha 0, beta 0)": {"alpha": 0.0, "beta": 0.0}}
        students.update({f"pkd beta {b}": {"alpha": 0.5, "temperature": 10, "beta": b} for b in (10, 100, 500, 1000)})
        for name, p in students.items():
            cfg = _sweep({**base, "technique": ["pkd"], "params": {"pkd": {"teacher": teacher, "layers": 3, **p}}})
            out["runs"][f"student 3 layers, {name}"] = _run(cfg, prepared, cache, Path(tmp) / name.replace(" ", "_"))
    return out


def dialogue(cache: Path, quick: bool) -> dict:
    from squeeze.prepare import prepare

    n = 400 if quick else 2000
    base = {"task": "dialogue", "model": {"name": "tiny-gpt2"},
            "data": {"source": "files", "files": [str(DATA / "personachat" / f"valid_self_original.part{i}.txt")
                                                  for i in (1, 2)], "split": [0.8, 0.1, 0.1],
                     "limit_train": n, "limit_eval": 200},
            "train": {"epochs": 1 if quick else 3, "batch_size": 16, "eval_batch_size": 32, "max_length": 128,
                      "lr": 2e-3, "num_threads": 2},
            "eval": {"max_new_tokens": 20, "max_generate": 50, "max_rank": 200}}
    teacher_cfg = _sweep(base)
    prepared = prepare(teacher_cfg, cache)
    out = {"n_train": n, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        out["runs"]["teacher (4 layers)"] = _run(teacher_cfg, prepared, cache, Path(tmp) / "teacher")
        teacher = str(Path(tmp) / "teacher" / "model")
        for name, p in {"undistilled (alpha 0, beta 0)": {"alpha": 0.0, "beta": 0.0},
                        "pkd top-32": {"alpha": 0.5, "temperature": 2, "beta": 100, "top_k": 32}}.items():
            cfg = _sweep({**base, "technique": ["pkd"], "params": {"pkd": {"teacher": teacher, "layers": 2, **p}}})
            out["runs"][f"student 2 layers, {name}"] = _run(cfg, prepared, cache, Path(tmp) / name.replace(" ", "_"))
    return out


def main() -> None:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 epoch on fewer examples (a smoke run)")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this check needs the real data")
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        results = {"sentiment": sentiment(Path(cache), args.quick), "dialogue": dialogue(Path(cache), args.quick)}
    date = datetime.date.today().isoformat()
    path = ROOT / "benchmarks" / "results" / f"{date}-pkd-check{'-quick' if args.quick else ''}.json"
    doc = {"date": date, "command": "benchmarks/pkd_check.py" + (" --quick" if args.quick else ""),
           "machine": machine(), "wall_s": time.perf_counter() - t0, **results}
    path.write_text(json.dumps(doc, indent=1))
    for task, r in results.items():
        print(f"\n{task} (n_train {r['n_train']})" + (f", majority class {r['majority']:.3f}" if r.get("majority") else ""))
        for name, m in r["runs"].items():
            keys = ("test/accuracy",) if task == "sentiment" else ("test/word_ppl", "test/ppl", "test/hits_at_1")
            print(f"  {name:45s} " + "  ".join(f"{k.removeprefix('test/')} {m[k]:.4g}" for k in keys) + f"  ({m['train_s']:.0f} s)")
    print(f"\n{path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
