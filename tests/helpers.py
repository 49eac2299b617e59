"""Small builders shared by tests: a tiny sweep, its prepared data, a model, a technique context, a recipe."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from squeeze import config, models
from squeeze.prepare import prepare
from squeeze.recipe import Recipe
from squeeze.registry import get_task, get_technique_class
from squeeze.techniques.base import TechniqueContext


def tiny_sweep(task="sentiment", preset="tiny-bert", size=120, technique=("finetune",), params=None, source=None, **train):
    doc = {"name": "s", "task": task, "technique": list(technique), "model": {"name": preset},
           "data": {"size": size, "split": [0.6, 0.2, 0.2]}, "train": {"max_length": 48, "batch_size": 8, **train},
           "eval": {"max_generate": 3, "max_rank": 3, "max_new_tokens": 4}, "params": params or {},
           "measure": {"latency": False}}
    if source or {"imp", "dq"} & set(technique) or ("pkd" in technique and not (params or {}).get("pkd", {}).get("teacher")):
        doc["source"] = {"sweep": source or "up"}
    return config.parse({"experiment": "t", "sweeps": [doc]}).sweeps[0]


def run_recipe(cfg, cache, out, source=None):
    """One trial through the trial's own recipe, checked for save -> reload parity; (final, model folder, prepared)."""
    prepared = prepare(cfg, cache, tokenizer_dir=source)
    r = Recipe(cfg, prepared, cache_dir=cache, source_dir=source)
    for _ in r.fit():
        pass
    final = r.finish(out)
    assert final.metrics["parity/ok"] == 1.0, (cfg.technique, final.metrics["parity/abs_diff"])
    if not torch.cuda.is_available():
        assert final.metrics["parity/tolerance"] == 0.0  # the CPU gets no slack: reloaded means identical
    return final, str(out / "model"), prepared


def tiny_model(sweep, prepared, seed=0):
    task = get_task(sweep.task)
    return models.build_model(sweep.model.name, task.head(prepared.tokenizer), prepared.tokenizer, seed=seed,
                              labels=prepared.labels)


def recipe(sweep, prepared, cache_dir, **kw) -> Recipe:
    """The trial's own builder, as the Ray trainable uses it (2 threads)."""
    torch.set_num_threads(2)
    return Recipe(sweep.model_copy(update={"train": sweep.train.model_copy(update={"num_threads": 2})}), prepared,
                  cache_dir=cache_dir, **kw)


def context(sweep, prepared, cache_dir, technique, source_dir=None, **params):
    task = get_task(sweep.task)
    cls = get_technique_class(technique)

    def evaluate(m):
        return task.evaluate(m, prepared.features["dev"], prepared.examples["dev"], tokenizer=prepared.tokenizer,
                             labels=prepared.labels, batch_size=32, device="cpu", eval_cfg=sweep.eval)[0]

    logged = []
    ctx = TechniqueContext(task=task, prepared=prepared, model_name=sweep.model.name, params=cls.Params(**params),
                           evaluate=evaluate, log_metrics=lambda m, s: logged.append((s, m)), cache_dir=str(cache_dir),
                           source_dir=source_dir, source_id=source_dir)
    ctx.logged = logged
    return ctx


def prepared_for(sweep, cache_dir):
    torch.set_num_threads(2)
    return prepare(sweep, cache_dir)


# a study driven through the command line, in a subprocess, against the working dir's SQLite store

def study_runs(workdir, experiment, sweep=None):
    from squeeze.tracking import mlflow_client

    client = mlflow_client(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, [], []
    runs = client.search_runs([exp.experiment_id], "", max_results=5000)
    parents = [r for r in runs if r.data.tags.get("squeeze.parent") == "1" and (sweep is None or r.data.tags.get("squeeze.sweep") == sweep)]
    children = [r for r in runs if "squeeze.trial_id" in r.data.tags and (sweep is None or r.data.tags.get("squeeze.sweep") == sweep)]
    return client, parents, children


def start_cli(workdir, *args, ignore_sigint: bool = False):
    """``squeeze`` in a child process; ``ignore_sigint``: as a shell starts a background job (``nohup ... &``)."""
    import signal

    def background():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited through exec, as bash leaves it for `cmd &`

    return subprocess.Popen([sys.executable, "-m", "squeeze.cli", *args], cwd=workdir, env=dict(os.environ),
                            stdout=open(workdir / f"{len(list(workdir.glob('*.log')))}.log", "w"), stderr=subprocess.STDOUT,
                            preexec_fn=background if ignore_sigint else None)


def kill_driver(proc) -> None:
    """SIGKILL a driver started in its own session and every process under it (the local Ray it started: GCS,
    raylet, workers), without a word; `ray stop` would also kill every other Ray on this machine."""
    import signal

    import psutil

    doomed = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each socket stays bound until all are chosen, so none is handed out twice."""
    import contextlib
    import socket

    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def wait_runs(workdir, experiment, until, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(1)
        if (workdir / "mlflow.db").exists():
            try:
                _, parents, children = study_runs(workdir, experiment)
            except Exception:
                continue
            if until(parents, children):
                return parents, children
    raise AssertionError("timed out: " + "".join(p.read_text()[-2000:] for p in workdir.glob("*.log")))
