"""MLflow runs -> one tidy pandas row per trial.

    from analysis.runs import load_runs
    df = load_runs("quickstart")                      # local store (sqlite:///mlflow.db)
    df = load_runs("quickstart", "http://127.0.0.1:5000")
    df.to_parquet("quickstart.parquet")
"""

from __future__ import annotations

import pandas as pd

ID_COLUMNS = ["run_id", "sweep", "task", "technique", "model", "status", "lr", "seed"]


def load_runs(experiment: str, tracking_uri: str | None = None, latest_only: bool = True) -> pd.DataFrame:
    """One row per trial run (parent runs excluded).

    With ``latest_only`` (the default) a stage that was run again (``--force``, changed settings)
    counts only with its latest parent run, so a re-run supersedes instead of doubling the population.

    Columns: run_id, sweep, task, technique, model, status (``STOPPED_EARLY`` for a trial a scheduler stopped between
    epochs: it has dev scores per epoch, costs, and no test score or model; ``stopped_early`` says when), every param (``lr``, ``seed`` and the
    other train fields without their ``train.`` prefix; the rest dotted), and every metric by
    its namespaced name (``val/accuracy``, ``test/f1`` ...), at its last logged value.

    Raises:
        ValueError: when the experiment does not exist.
    """
    from squeeze.tracking import PARENT_TAG, SWEEP_TAG, TRIAL_TAG, resolve_uri
    from squeeze.tracking import mlflow_client

    uri = resolve_uri(tracking_uri)
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"experiment {experiment!r} not found in {uri}")
    runs = client.search_runs([exp.experiment_id], f"tags.`{TRIAL_TAG}` != ''", max_results=50000)
    if latest_only:
        parents = client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '1'", max_results=50000,
                                     order_by=["attributes.start_time DESC"])
        latest = {}  # per sweep: its newest FINISHED parent, else its newest (an interrupted stage not yet finished)
        for p in sorted(parents, key=lambda p: p.info.status != "FINISHED"):
            latest.setdefault(p.data.tags.get(SWEEP_TAG), p.info.run_id)
        keep = set(latest.values())
        runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in keep or not parents]
    rows = []
    for r in runs:
        stopped = r.data.tags.get("squeeze.stopped_early")
        row = {"run_id": r.info.run_id, "status": "STOPPED_EARLY" if stopped and r.info.status == "FINISHED" else r.info.status,
               "stopped_early": stopped or "", "sweep": r.data.tags.get("squeeze.sweep"),
               "task": r.data.tags.get("task"), "technique": r.data.tags.get("technique"),
               "model": r.data.tags.get("model"), "trial_id": r.data.tags.get(TRIAL_TAG),
               "parent_run_id": r.data.tags.get("mlflow.parentRunId"),
               "start_time": pd.to_datetime(r.info.start_time, unit="ms")}
        for k, v in r.data.params.items():
            row[k.removeprefix("train.")] = _number(v)
        row.update(r.data.metrics)
        row.update({k: v for k, v in r.data.tags.items()
                    if k.startswith(("energy/", "latency/", "squeeze.error", "squeeze.metrics", "squeeze.pretraining"))})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=ID_COLUMNS)
    df = _tidy(df)
    df["stale"] = _stale(df)
    first = [c for c in ID_COLUMNS + ["stage", "X", "Y"] if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]].sort_values(["sweep", "start_time"], ignore_index=True)


def _stale(df: pd.DataFrame) -> pd.Series:
    """A trial is stale when the source trial it started from is not among the current runs (its source stage ran
    again since): comparing it with the current baseline would mix generations."""
    if "source_run" not in df:
        return pd.Series(False, index=df.index)
    current = set(df["run_id"])
    return df["source_run"].map(lambda src: isinstance(src, str) and src != "" and src not in current)


LEGACY = {"finetune": "baseline", "imp+dq": "dq+imp", "imp-prune": "imp_prune"}  # tags of runs before one vocabulary


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Display technique names, the stage, and the IMP schedule (X, Y) carried along the source chain."""
    df = df.copy()
    df["stage"] = df["sweep"]
    df["technique"] = df["technique"].map(lambda t: LEGACY.get(t, t))
    x = df.get("params.imp_prune.sparsity", pd.Series(index=df.index, dtype=float))
    y = df.get("params.imp_prune.every", pd.Series(index=df.index, dtype=float))
    df["X"], df["Y"] = pd.to_numeric(x, errors="coerce"), pd.to_numeric(y, errors="coerce")
    if "source_run" in df:
        for _ in range(3):  # prune -> imp -> dq+imp
            for col in ("X", "Y"):
                known = dict(zip(df["run_id"], df[col]))
                df[col] = [v if v == v else known.get(src, float("nan"))
                           for v, src in zip(df[col], df["source_run"])]
    return df


def load_prune_histories(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """Per prune event of every IMP prune trial: X, Y, step, reached sparsity and perplexity (Figure 2)."""
    from squeeze.tracking import mlflow_client, resolve_uri

    uri = resolve_uri(tracking_uri)
    client = mlflow_client(uri)
    runs = load_runs(experiment, uri)
    rows = []
    for _, r in runs[runs["technique"] == "imp_prune"].iterrows():
        sp = {m.step: m.value for m in client.get_metric_history(r["run_id"], "prune/sparsity")}
        pp = {m.step: m.value for m in client.get_metric_history(r["run_id"], "prune/ppl")}
        for step in sorted(set(sp) & set(pp), key=lambda s: (s < 0, s)):
            rows.append({"run_id": r["run_id"], "model": r["model"], "X": r["X"], "Y": r["Y"], "step": step,
                         "sparsity": sp[step], "ppl": pp[step]})
    return pd.DataFrame(rows, columns=["run_id", "model", "X", "Y", "step", "sparsity", "ppl"])


def _number(v: str):
    """A param's value with its type back: int, float, bool, None, list (MLflow stores them as text)."""
    import json

    for parse in (int, float):
        try:
            return parse(v)
        except ValueError:
            pass
    if v in ("True", "False"):
        return v == "True"
    if v == "None":
        return None
    if v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            pass
    return v


def to_parquet(df: pd.DataFrame, path: str) -> None:
    """Write a runs table to Parquet (pyarrow)."""
    df.to_parquet(path, index=False)
