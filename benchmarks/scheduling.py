"""Whole-sweep figures: the study as a DAG vs one stage at a time, and squeeze's sweep vs the usual Hugging Face
way to sweep (``Trainer.hyperparameter_search(backend="ray")``). Imported by ``benchmarks/run.py``."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, summary


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _timed(fn) -> tuple[float, float]:
    """Wall seconds of ``fn()`` and the machine's CPU utilisation meanwhile (1.0: every core busy)."""
    b0, t0 = _cpu_busy()
    w0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - w0
    b1, t1 = _cpu_busy()
    return wall, (b1 - b0) / max(t1 - t0, 1e-9)


def bench_study_dag(reps: int = 1, nodes: int = 4, cpus_per_node: int = 2) -> dict:
    """``squeeze study sweeps/quickstart.yaml`` (every technique, all three tasks, tiny models: 20 stages, 40
    trials) sequential vs as a DAG, on Ray's multi-node test cluster; the arms alternate, each in a fresh store."""
    import ray
    from ray.cluster_utils import Cluster

    from squeeze import config
    from squeeze.driver import sweep

    cfg = config.load(str(ROOT / "sweeps" / "quickstart.yaml"), ["max_concurrent_trials=0"])
    seq, dag, busy = [], [], {"sequential": [], "dag": []}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus_per_node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    here = os.getcwd()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            sweep.run(cfg, dry_run=True)  # tokenizers and data once, outside both arms
            for i in range(reps):
                for arm in (("sequential", "dag") if i % 2 == 0 else ("dag", "sequential")):
                    run = cfg.model_copy(update={"experiment": f"dag-bench-{arm}-{i}"})
                    wall, used = _timed(lambda run=run, arm=arm: sweep.run(run, sequential=arm == "sequential"))
                    (seq if arm == "sequential" else dag).append(wall)
                    busy[arm].append(used)
    finally:
        os.chdir(here)
        ray.shutdown()
        cluster.shutdown()
    ratios = [s / d for s, d in zip(seq, dag)]
    return {"study_dag_speedup": summary(
        ratios, sequential_wall_s=seq, dag_wall_s=dag, cluster=f"{nodes} nodes x {cpus_per_node} logical CPUs",
        physical_cores=os.cpu_count(), cpu_utilisation={k: statistics.median(v) for k, v in busy.items()},
        note="wall of `squeeze study sweeps/quickstart.yaml --sequential` / the same as a DAG (max_concurrent_trials=0, "
             "1 CPU per trial), data prepared before; cpu_utilisation = the machine's busy share during each arm: "
             "when the sequential arm already keeps every physical core busy, the DAG can only hide per-stage "
             "overheads (Tuner and actor start, MLflow parents), not add compute")}


def _hf_search(model_dir: str, rows: dict, lrs, seeds, epochs: int, batch: int, out: str) -> float:
    """The usual Hugging Face sweep: tokenize with datasets.map, then Trainer.hyperparameter_search(backend="ray")."""
    import datasets
    import transformers
    from ray import tune

    t0 = time.perf_counter()
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    ds = {k: datasets.Dataset.from_dict(v).map(lambda b: tok(b["text"], truncation=True, max_length=128), batched=True)
          for k, v in rows.items()}
    args = transformers.TrainingArguments(output_dir=out, per_device_train_batch_size=batch, num_train_epochs=epochs,
                                          eval_strategy="no", save_strategy="no", report_to=[], use_cpu=True,
                                          disable_tqdm=True, logging_strategy="no", dataloader_num_workers=0)
    trainer = transformers.Trainer(
        model_init=lambda: transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2),
        args=args, train_dataset=ds["train"], eval_dataset=ds["dev"],
        data_collator=transformers.DataCollatorWithPadding(tok))
    trainer.hyperparameter_search(
        hp_space=lambda _: {"learning_rate": tune.grid_search(list(lrs)), "seed": tune.grid_search(list(seeds))},
        backend="ray", n_trials=1, direction="minimize", resources_per_trial={"cpu": 1},
        storage_path=os.path.join(out, "ray"), verbose=0)
    return time.perf_counter() - t0


def _trial_parts(table) -> dict:
    """Where a squeeze trial's time goes (medians over the grid's trials, from its MLflow runs): training with the
    per-epoch dev evaluation, the final test evaluation, and the rest (model built, saved, reloaded and re-checked,
    MLflow logging)."""
    from analysis.runs import load_runs
    from squeeze.tracking import default_uri

    runs = load_runs("vs-hf", default_uri())
    runs = runs[runs["trial_id"].notna() & runs["time/train_s"].notna()]
    med = statistics.median
    total, train, test = med(table["time_total_s"]), med(runs["time/train_s"]), med(runs["time/eval_s"])
    return {"trial_s": total, "train_s": train, "test_eval_s": test, "rest_s": total - train - test}


def bench_sweep_vs_hf(data_cfg: dict, reps: int = 1, lrs=(5e-5, 1e-4), seeds=(0, 1, 2, 3), epochs: int = 1,
                      batch: int = 16) -> dict:
    """The same 8-trial grid (MiniLM, data, epochs, batch size, learning rates, seeds, 1 CPU per trial) through
    ``squeeze sweep`` and through ``Trainer.hyperparameter_search(backend="ray")``, Ray started before both."""
    import ray

    from squeeze import config
    from squeeze.driver import sweep
    from squeeze.data import load_splits
    from squeeze.presets import minilm_path
    from squeeze.registry import get_task

    cfg = config.parse({"experiment": "vs-hf", "max_concurrent_trials": 2, "sweeps": [{
        "name": "grid", "task": "sentiment", "model": {"name": "minilm"}, "data": data_cfg,
        "train": {"epochs": epochs, "batch_size": batch, "max_length": 128, "num_threads": 1},
        "measure": {"latency": False},
        "search_space": {"lr": {"grid_search": list(lrs)}, "seed": {"grid_search": list(seeds)}}}]})
    s = cfg.sweeps[0]
    splits = load_splits(get_task("sentiment"), s.data).splits
    labels = sorted({r["label"] for r in splits["train"]})
    rows = {k: {"text": [r["text"] for r in splits[k]], "label": [labels.index(r["label"]) for r in splits[k]]}
            for k in ("train", "dev")}
    ours, theirs, parts = [], [], []
    here = os.getcwd()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        for i in range(reps):
            for arm in (("squeeze", "hf") if i % 2 == 0 else ("hf", "squeeze")):
                with tempfile.TemporaryDirectory() as tmp:
                    os.chdir(tmp)
                    if arm == "squeeze":
                        t0 = time.perf_counter()
                        outcome = sweep.run(cfg)[0]
                        ours.append(time.perf_counter() - t0)
                        assert len(outcome.table) == len(lrs) * len(seeds) and not outcome.errors
                        parts.append(_trial_parts(outcome.table))
                    else:
                        theirs.append(_hf_search(minilm_path(), rows, lrs, seeds, epochs, batch, tmp))
                    os.chdir(here)
    finally:
        os.chdir(here)
        ray.shutdown()
    return {"sweep_vs_hf_search": summary(
        [h / o for h, o in zip(theirs, ours)], squeeze_wall_s=ours, hf_wall_s=theirs, trials=len(lrs) * len(seeds),
        n_train=len(rows["train"]["text"]), n_dev=len(rows["dev"]["text"]), squeeze_trial_parts=parts,
        note="wall of Trainer.hyperparameter_search(backend='ray') (datasets.map tokenization, model_init, one eval "
             "per trial, checkpoint per trial) / wall of `squeeze sweep` on the same grid (tokenized once, data "
             "through the object store, warm actors; it also evaluates dev and test, saves, reloads and re-checks "
             "every model and logs to MLflow); Ray started before both")}
