"""Recipe search against brute force, on tiny models with generated sentiment data (2 CPU cores, a few minutes).

    .venv/bin/python benchmarks/search.py

1. ASHA against the full grid: the same 8 learning rates, 8 epochs each, tiny-bert, ASHA with three settings
   (grace period, eta) = (1, 2), (2, 2), (1, 3), run one after the other; training compute is the sum of the trials' ``time/train_s`` (stopped
   trials included) and the epochs they trained.
2. NSGA-II and multi-objective TPE against random search at an equal number of trials (16) over the one-shot
   menu from the best baseline, the technique itself searched: magnitude or Wanda pruning (sparsity uniform in
   [0.05, 0.95]), RTN or GPTQ weight-only (4 or 8 bits, group 32 or 64), magnitude+RTN, Wanda+GPTQ; objectives dev accuracy (max) and the stored model's size on disk (min);
   hypervolume against one reference point (accuracy 0.5, the dense model's size), median over 3 searcher seeds
   (random: 3 stage names, whose identities seed the draws).
Writes benchmarks/results/<date>-search.json.

    .venv/bin/python benchmarks/search.py --problem minilm

runs part 2 only, on a real problem: pre-trained MiniLM-L6 fine-tuned on
1,000 real IMDB reviews from ../shared/data (one baseline, 2 epochs; 300 dev and 300 test examples, 128 tokens), the
same menu and budget, to benchmarks/results/<date>-search-minilm.json (about 40 minutes on 2 cores).

    .venv/bin/python benchmarks/search.py --problem minilm-prune

the same on a front that is a curve: only magnitude, Wanda and SparseGPT, each with its sparsity in [0.05, 0.95]
(stored sparse: the disk size falls with the sparsity), to <date>-search-minilm-prune.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time

import common  # noqa: F401  (offline, repository on sys.path)

ROOT = common.ROOT
LRS = [3e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 3e-5, 1e-5]
EPOCHS = 8
BASE = {"task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 1500, "split": [0.6, 0.2, 0.2]},
        "train": {"epochs": EPOCHS, "batch_size": 16, "max_length": 48, "eval_batch_size": 64},
        "measure": {"latency": False}}
MENU = {"technique": {"choice": ["magnitude", "wanda", "rtn", "gptq", ["magnitude", "rtn"], ["wanda", "gptq"]]},
        "magnitude.sparsity": {"uniform": [0.05, 0.95]}, "wanda.sparsity": {"uniform": [0.05, 0.95]},
        "rtn.bits": {"choice": [4, 8]}, "rtn.group_size": {"choice": [32, 64]},
        "gptq.bits": {"choice": [4, 8]}, "gptq.group_size": {"choice": [32, 64]}}
ALGOS = ("random", "nsga2", "tpe")
TINY = {"task": "sentiment", "model": {"name": "tiny-bert"}, "data": BASE["data"],
        "train": {"max_length": 48, "batch_size": 16, "eval_batch_size": 64}, "measure": {"latency": False}}
SHARED = ROOT.parent / "shared" / "data" / "imdb"
MINILM = {"task": "sentiment", "model": {"name": "minilm"},
          "data": {"source": "files", "files": [str(SHARED / "train.csv"), str(SHARED / "test.csv")],
                   "split": [0.5, 0.25, 0.25], "limit_train": 1000, "limit_eval": 300, "truncation_side": "left"},
          "train": {"max_length": 128, "batch_size": 16, "eval_batch_size": 64},
          "measure": {"latency": False, "parity_examples": 64}}
# a front that is a curve: one-shot pruning only (stored sparse, so disk size falls with sparsity and accuracy with it),
# the pruner and its sparsity searched; SparseGPT's curve should dominate, which an adaptive search can learn
PRUNE_MENU = {"technique": {"choice": ["magnitude", "wanda", "sparsegpt"]},
              **{f"{t}.sparsity": {"uniform": [0.05, 0.95]} for t in ("magnitude", "wanda", "sparsegpt")}}
PROBLEMS = {"tiny": (TINY, {"epochs": 3, "lr": 1e-3}, MENU), "minilm": (MINILM, {"epochs": 2, "lr": 1e-4, "seed": 0}, MENU),
            "minilm-prune": (MINILM, {"epochs": 2, "lr": 1e-4, "seed": 0}, PRUNE_MENU)}


def _epochs(row, total: int) -> int:
    reason = row.get("stopped_early") or ""
    return int(reason.split("after epoch ")[1].split(" ")[0]) if reason else total


ASHA_SETTINGS = [(1, 2), (2, 2), (1, 3)]  # (grace period, reduction factor): rungs after 1,2,4 / 2,4 / 1,3 epochs


def asha_vs_grid(tracking: str) -> dict:
    import squeeze

    sweeps = [{**BASE, "name": "grid", "search_space": {"lr": {"grid_search": LRS}}}]
    for grace, eta in ASHA_SETTINGS:
        sweeps.append({**BASE, "name": f"asha-g{grace}-eta{eta}", "search_space": {"lr": {"grid_search": LRS}},
                       "search": {"scheduler": "asha", "grace_period": grace, "reduction_factor": eta}})
    t0 = time.perf_counter()
    df = squeeze.study({"experiment": "bench-asha", "max_concurrent_trials": 2, "sweeps": sweeps},
                       tracking_uri=tracking, sequential=True)
    out = {"wall_s": time.perf_counter() - t0}
    for name in [s["name"] for s in sweeps]:
        g = df[df["sweep"] == name]
        out[name] = {"train_s": float(g["time/train_s"].sum()),
                     "epochs": sum(_epochs(r, EPOCHS) for r in g.to_dict("records")),
                     "best_val_accuracy": float(g[g["status"] == "FINISHED"]["val/accuracy"].max()),
                     "stopped_early": int((g["status"] == "STOPPED_EARLY").sum())}
        if name != "grid":
            out[name].update(compute_ratio_train_s=out[name]["train_s"] / out["grid"]["train_s"],
                             compute_ratio_epochs=out[name]["epochs"] / out["grid"]["epochs"],
                             reaches_grid_best=out[name]["best_val_accuracy"] >= out["grid"]["best_val_accuracy"])
    return out


def mo_study(problem: str, trials: int, seeds) -> dict:
    """One baseline stage, then a search stage per (algorithm, seed) from its best trial."""
    common_, train, menu = PROBLEMS[problem]
    base = {**common_, "name": "baseline", "train": {**common_["train"], **train}}
    objectives = [{"metric": "val/accuracy", "mode": "max"}, {"metric": "size/disk_mb", "mode": "min"}]
    sweeps = [base]
    for s in seeds:
        for algo in ALGOS:
            sweeps.append({**common_, "name": f"{algo}-{s}", "source": {"sweep": "baseline", "select": "best"},
                           "num_samples": trials, "objectives": objectives,
                           "search": {"algorithm": algo, **({"seed": s} if algo != "random" else {})},
                           "search_space": menu})
    return {"experiment": "bench-mo", "max_concurrent_trials": 2, "sweeps": sweeps}


def mo_search(tracking: str, problem: str = "tiny", trials: int = 16, seeds=(0, 1, 2)) -> dict:
    import squeeze
    from squeeze.driver.search.front import hypervolume

    t0 = time.perf_counter()
    df = squeeze.study(mo_study(problem, trials, seeds), tracking_uri=tracking)
    dense = float(df[df["sweep"] == "baseline"]["size/disk_mb"].max())
    ref = [0.5, dense]
    hv, recipes = {}, {}
    for s in seeds:
        for algo in ALGOS:
            g = df[(df["sweep"] == f"{algo}-{s}") & (df["status"] == "FINISHED")]
            hv.setdefault(algo, []).append(hypervolume(g[["val/accuracy", "size/disk_mb"]].to_numpy(), ["max", "min"], ref))
            recipes.setdefault(algo, []).append(g["technique"].value_counts().to_dict())
    med = {a: statistics.median(v) for a, v in hv.items()}
    return {"problem": problem, "wall_s": time.perf_counter() - t0, "trials_per_search": trials,
            "baseline_val_accuracy": float(df[df["sweep"] == "baseline"]["val/accuracy"].max()), "reference": ref, "hypervolume": hv,
            "median_hypervolume": med, "recipes_drawn": recipes, **{f"ratio_{a}_over_random": med[a] / med["random"] if med["random"] else None for a in ALGOS[1:]}}


def main() -> None:
    from run import machine

    ap = argparse.ArgumentParser(prog="benchmarks/search.py")
    ap.add_argument("--problem", choices=sorted(PROBLEMS), default="tiny",
                    help="tiny: both parts on tiny-bert; minilm: the multi-objective part on MiniLM and real IMDB; "
                         "minilm-prune: the same with only the pruners (a curved front)")
    problem = ap.parse_args().problem
    if problem != "tiny" and not SHARED.is_dir():
        raise SystemExit(f"benchmarks/search.py: --problem {problem} reads IMDB from {SHARED}, which does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        tracking = f"sqlite:///{tmp}/mlflow.db"
        result = {"machine": machine(), "date": datetime.date.today().isoformat()}
        if problem == "tiny":
            result["asha_vs_grid"] = asha_vs_grid(tracking)
        result["mo_search"] = mo_search(tracking, problem)
        result["goals"] = {"asha_compute_at_most": 0.5, "mo_hypervolume_over_random_at_least": 1.1}
    suffix = "" if problem == "tiny" else f"-{problem}"
    path = ROOT / "benchmarks" / "results" / f"{result['date']}-search{suffix}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
