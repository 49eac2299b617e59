"""The paper's tables from a runs DataFrame (``analysis.runs.load_runs``): Table 4, Table 3, costs.

Table 4: per task x technique, the test metrics of the best-validation trial, the % change
against the baseline (arrows give the raw direction), the best compression technique per metric
marked with ``*`` (direction-aware: lower perplexity and TER are better), and EVP at n = N of
the primary validation metric. Every table renders as Markdown, LaTeX or CSV.

A task's metrics and their directions come from its runs (the ``squeeze.metrics`` tag every trial
carries) or, for older runs, from squeeze's task registry; a task known to neither is an error,
never left out of a table.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from analysis.evp import expected_max

ORDER = ["baseline", "pkd", "imp", "dq", "dq+imp", "qat"]
METRICS_TAG, PRETRAINING_TAG = "squeeze.metrics", "squeeze.pretraining"


def _registry(task: str):
    from squeeze.registry import get_task

    try:
        return get_task(task)
    except KeyError:
        return None


def task_metrics(df: pd.DataFrame, task: str) -> dict[str, str]:
    """``{metric: "max" | "min"}`` of a task, the primary first.

    Raises:
        ValueError: when neither the runs nor the registry say what the task's metrics are.
    """
    tagged = df.loc[df["task"] == task, METRICS_TAG].dropna() if METRICS_TAG in df else pd.Series(dtype=object)
    if len(tagged):
        return json.loads(tagged.iloc[0])
    known = _registry(task)
    if known is None:
        raise ValueError(f"task {task!r}: its runs carry no {METRICS_TAG} tag and squeeze's task registry does not "
                         "know it, so its metric directions are unknown")
    return dict(known.metrics)


def primary(df: pd.DataFrame, task: str) -> tuple[str, str]:
    """(name, mode) of the task's primary metric: the first declared one its runs report (runs from before a
    metric existed, such as word_ppl, fall back to the next one)."""
    metrics = task_metrics(df, task)
    rows = df[df["task"] == task]
    for name, mode in metrics.items():
        if f"val/{name}" in rows and rows[f"val/{name}"].notna().any():
            return name, mode
    return next(iter(metrics.items()))


def report_tasks(df: pd.DataFrame) -> list[str]:
    """The downstream tasks in ``df`` (a pre-training task, the IMP prune stage, has no Table 4 row).

    Raises:
        ValueError: for a task whose metrics are unknown (see ``task_metrics``).
    """
    out = []
    for task in sorted(df["task"].dropna().unique()):
        rows = df.loc[df["task"] == task, PRETRAINING_TAG].dropna() if PRETRAINING_TAG in df else pd.Series(dtype=object)
        pretraining = str(rows.iloc[0]) == "1" if len(rows) else getattr(_registry(task), "pretraining", False)
        task_metrics(df, task)
        if not pretraining:
            out.append(task)
    return out


def _order(t: str) -> int:
    return ORDER.index(t) if t in ORDER else len(ORDER)


def best_trials(df: pd.DataFrame) -> pd.DataFrame:
    """The best-validation FINISHED trial of each task x technique (prune-stage and stale trials excluded)."""
    rows = []
    current = df[~df["stale"].astype(bool)] if "stale" in df else df  # never compare across generations
    for (task, tech), g in current[current["task"].isin(report_tasks(df)) & (current["status"] == "FINISHED")].groupby(
            ["task", "technique"]):
        name, mode = primary(df, task)
        g = g.dropna(subset=[f"val/{name}"])
        if len(g):
            rows.append(g.loc[g[f"val/{name}"].idxmax() if mode == "max" else g[f"val/{name}"].idxmin()])
    return pd.DataFrame(rows).reset_index(drop=True)


def table4(df: pd.DataFrame) -> pd.DataFrame:
    """Long form: task, technique, metric, value, delta_pct, arrow, best, evp, N."""
    best = best_trials(df)
    out = []
    for task, g in best.groupby("task"):
        base = g[g["technique"] == "baseline"]
        name, mode = primary(df, task)
        for _, row in g.iterrows():
            trials = df[(df["task"] == task) & (df["technique"] == row["technique"])]
            scores = trials[f"val/{name}"].to_numpy(dtype=float)
            n = int(np.sum(~np.isnan(scores)))
            evp = expected_max(scores, n, mode=mode) if n else float("nan")
            for metric in task_metrics(df, task):
                col = f"test/{metric}"
                if col not in g or pd.isna(row.get(col)):
                    continue
                value = float(row[col])
                ref = float(base[col].iloc[0]) if len(base) and col in base and pd.notna(base[col].iloc[0]) else float("nan")
                delta = (value - ref) / abs(ref) * 100 if ref and not math.isnan(ref) else float("nan")
                arrow = "" if math.isnan(delta) or abs(delta) < 0.05 else ("↑" if delta > 0 else "↓")
                out.append({"task": task, "technique": row["technique"], "metric": metric, "value": value,
                            "delta_pct": delta, "arrow": arrow, "evp": evp, "N": n, "run_id": row["run_id"]})
    t = pd.DataFrame(out, columns=["task", "technique", "metric", "value", "delta_pct", "arrow", "evp", "N", "run_id"])
    t["best"] = False
    for (task, metric), g in t[t["technique"] != "baseline"].groupby(["task", "metric"]):
        mode = task_metrics(df, task)[metric]
        top = g["value"].max() if mode == "max" else g["value"].min()
        t.loc[g.index[g["value"] == top], "best"] = True  # ties share the mark
    return t.sort_values(["task", "technique"], key=lambda s: s.map(_order) if s.name == "technique" else s, ignore_index=True)


def table4_wide(t: pd.DataFrame, task: str | None = None, passes: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per task x technique; cells ``value (+d% ↑)``, ``*`` on the best compression technique.

    With ``task``, only that task's rows and metric columns (the readable form, one table per task). With ``passes``
    (``analysis.claims.pass_fail``), a column per fraction of the baseline's primary metric: pass only where the
    lower end of the technique's 95% interval over seeds reaches it.
    """
    if task is not None:
        t = t[t["task"] == task]
    def cell(r):
        s = f"{r['value']:.4g}"
        if r["technique"] != "baseline" and not math.isnan(r["delta_pct"]):
            s += f" ({r['delta_pct']:+.1f}% {r['arrow']})".replace(" )", ")")
        return s + (" *" if r["best"] else "")

    if t.empty:
        return pd.DataFrame()
    t = t.assign(cell=t.apply(cell, axis=1))
    wide = t.pivot_table(index=["task", "technique"], columns="metric", values="cell", aggfunc="first")
    evp = t.groupby(["task", "technique"])[["evp", "N"]].first()
    wide["EVP (val, n=N)"] = evp["evp"].map(lambda v: f"{v:.4g}")
    wide["N"] = evp["N"]
    wide = wide.reset_index()
    levels = [c for c in (passes.columns if passes is not None else []) if c.endswith("%")]
    for level in levels:
        got = passes.set_index(["task", "technique"])[level]
        wide[f">= {level}"] = [got.get((a, b), "") for a, b in zip(wide["task"], wide["technique"])]
    wide["_o"] = wide["technique"].map(_order)
    order = list(dict.fromkeys(t["metric"]))  # table4 lists each task's metrics in their declared order
    cols = ["task", "technique"] + [m for m in order if m in wide.columns]
    cols = list(dict.fromkeys(cols)) + ["EVP (val, n=N)", "N"] + [f">= {level}" for level in levels]
    return wide.sort_values(["task", "_o"])[cols].fillna("")


def _post_training(label: str) -> bool:
    """Does a technique label (``dq+imp``, ``gptq+sparsegpt``) name a post-training technique (no learning rate)?"""
    from squeeze.registry import get_technique_class

    names = [get_technique_class(t) for t in str(label).split("+") if t in _known_techniques()]
    return any(c.post_training for c in names)


def _known_techniques() -> set[str]:
    from squeeze.registry import TECHNIQUES

    return set(TECHNIQUES)


def table3(df: pd.DataFrame) -> pd.DataFrame:
    """The settings of each task x technique: model, epochs, batch size, learning rates, trials, X/Y."""
    rows = []
    for (task, tech), g in df.groupby(["task", "technique"]):
        rows.append({"task": task, "technique": tech, "model": ", ".join(sorted(map(str, g["model"].dropna().unique()))),
                     "epochs": ", ".join(sorted(map(str, g.get("epochs", pd.Series(dtype=str)).dropna().unique()))),
                     "batch size": ", ".join(sorted(map(str, g.get("batch_size", pd.Series(dtype=str)).dropna().unique()))),
                     "learning rates": ", ".join(f"{v:g}" for v in sorted(g["lr"].dropna().unique())) if not _post_training(tech) else "-",
                     "X": ", ".join(f"{v:g}" for v in sorted(g["X"].dropna().unique())) if "X" in g else "",
                     "Y": ", ".join(f"{v:g}" for v in sorted(g["Y"].dropna().unique())) if "Y" in g else "",
                     "trials": len(g), "train split": g.get("data.n_train", pd.Series([""])).iloc[0]})
    t = pd.DataFrame(rows)
    return t.sort_values(["task", "technique"], key=lambda s: s.map(_order) if s.name == "technique" else s, ignore_index=True)


DECODE = "latency/cpu_decode_tokens_per_s"
COST_COLUMNS = {"size/disk_mb": "size on disk (MB)", "size/embeddings_mb": "embeddings (MB)",
                "size/rest_mb": "rest (MB)", "size/embeddings_int8": "embeddings int8",
                "latency/cpu_ms_per_example": "CPU ms/example", "latency/cpu_p10_ms_per_example": "CPU p10",
                "latency/cpu_p90_ms_per_example": "CPU p90",
                "latency/gpu_ms_per_example": "GPU ms/example", DECODE: "CPU decode tok/s",
                "time/train_s": "train s (sweep)",
                "energy/total_kwh": "kWh (sweep)", "co2/kg": "kg CO2 (sweep)"}


def cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """Size and latency of the best trial; training time, energy and CO2 summed over the sweep.

    Energy and CO2 sums are NaN when any trial's figure is unavailable (never a partial sum).
    """
    best = best_trials(df).set_index(["task", "technique"])
    rows = []
    for (task, tech), g in df[df["status"] == "FINISHED"].groupby(["task", "technique"]):
        row = {"task": task, "technique": tech}
        for col, label in COST_COLUMNS.items():
            if col == DECODE and (col not in df or df[col].isna().all()):
                continue  # a table of classifiers: no decode column
            if col not in df:
                row[label] = float("nan")
            elif "(sweep)" in label:
                row[label] = g[col].sum(min_count=len(g)) if g[col].notna().all() else float("nan")
            else:
                row[label] = best.at[(task, tech), col] if (task, tech) in best.index else float("nan")
        runtime = best.at[(task, tech), "latency/runtime"] if "latency/runtime" in best and (task, tech) in best.index else None
        row["served by"] = runtime if isinstance(runtime, str) else ""
        rows.append(row)
    t = pd.DataFrame(rows)
    _against_baseline(t)
    return t.sort_values(["task", "technique"], key=lambda s: s.map(_order) if s.name == "technique" else s, ignore_index=True)


def _against_baseline(t: pd.DataFrame) -> None:
    """Each technique's size ratio and measured CPU speed-up against its task's baseline, side by side: a format
    whose runtime has no fast kernel here shows its size saving next to a speed-up near (or below) 1."""
    t["size ratio"], t["CPU speed-up (measured)"] = float("nan"), float("nan")
    for task, g in t.groupby("task"):
        base = g[g["technique"] == "baseline"]
        if base.empty:
            continue
        b = base.iloc[0]
        t.loc[g.index, "size ratio"] = g["size on disk (MB)"] / b["size on disk (MB)"]
        t.loc[g.index, "CPU speed-up (measured)"] = b["CPU ms/example"] / g["CPU ms/example"]
        if "CPU decode tok/s" in t:
            t.loc[g.index, "decode speed-up (measured)"] = g["CPU decode tok/s"] / b["CPU decode tok/s"]


def render(t: pd.DataFrame, fmt: str) -> str:
    """``markdown``, ``latex`` or ``csv``."""
    if fmt == "markdown":
        return t.to_markdown(index=False, floatfmt=".4g")
    if fmt == "latex":
        return t.to_latex(index=False, float_format="%.4g")
    if fmt == "csv":
        return t.to_csv(index=False)
    raise ValueError(f"format must be markdown, latex or csv, got {fmt!r}")
