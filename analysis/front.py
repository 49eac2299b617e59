"""The non-dominated front of each stage over its objectives, with its hypervolume, and the cost to a target.

    from analysis.front import fronts
    for sweep, f in fronts("quickstart").items():
        print(sweep, f.hypervolume, f.reference)
        print(f.table)          # every finished, feasible trial; on_front marks the front

A stage's objectives and constraints are the ones its sweep declared (its parent run's tags; default: the task's
primary metric). Trials a scheduler stopped early and trials that break a constraint are not on the front (the
table says why). The hypervolume's reference point, unless one is given, is the worst value of each objective among
the stage's feasible trials moved 10% of the range further; it is stated with the number, since a hypervolume
means nothing without it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from squeeze.driver.search.front import costs, hypervolume, pareto_mask


@dataclass
class Front:
    sweep: str
    objectives: list[dict]
    table: pd.DataFrame
    hypervolume: float
    reference: list[float]


def stage_settings(experiment: str, tracking_uri: str | None = None) -> dict[str, dict]:
    """Per sweep: the objectives and constraints of its latest parent run."""
    from squeeze.tracking import PARENT_TAG, SWEEP_TAG, mlflow_client, resolve_uri

    client = mlflow_client(resolve_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    out: dict[str, dict] = {}
    for p in client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '1'", max_results=50000,
                                order_by=["attributes.start_time DESC"]):
        name = p.data.tags.get(SWEEP_TAG)
        if name in out or "squeeze.objectives" not in p.data.tags:
            continue
        out[name] = {"objectives": json.loads(p.data.tags["squeeze.objectives"]),
                     "constraints": json.loads(p.data.tags.get("squeeze.constraints", "[]"))}
    return out


def feasible(rows: pd.DataFrame, constraints: list[dict], all_runs: pd.DataFrame) -> pd.Series:
    """Why each row breaks a constraint ("" when it keeps them all); a ratio compares with the row's source trial."""
    values = dict(zip(all_runs["run_id"], all_runs.to_dict("records")))
    why = []
    for _, r in rows.iterrows():
        broken = ""
        for c in constraints:
            kind = next(k for k in ("min", "max", "min_ratio_of_source", "max_ratio_of_source") if k in c)
            v = r.get(c["metric"], math.nan)
            if kind.endswith("_of_source"):
                src = values.get(r.get("source_run"), {}).get(c["metric"], math.nan)
                bound = c[kind] * src
            else:
                bound = c[kind]
            low = kind.startswith("min")
            if not (v == v and bound == bound) or (v < bound if low else v > bound):
                broken = f"{c['metric']} {v:.4g} {'<' if low else '>'} {bound:.4g} ({kind} {c[kind]:g})"
                break
        why.append(broken)
    return pd.Series(why, index=rows.index)


def stage_front(sweep: str, rows: pd.DataFrame, objectives: list[dict], constraints: list[dict] | None = None,
                all_runs: pd.DataFrame | None = None, reference: list[float] | None = None) -> Front:
    metrics, modes = [o["metric"] for o in objectives], [o["mode"] for o in objectives]
    rows = rows[rows["status"] == "FINISHED"].copy()
    rows["infeasible"] = feasible(rows, constraints or [], rows if all_runs is None else all_runs) if len(rows) else ""
    missing = [m for m in metrics if m not in rows]
    ok = rows[(rows["infeasible"] == "") & rows[metrics].notna().all(axis=1)] if not missing and len(rows) else rows.iloc[:0]
    rows["on_front"] = False
    if len(ok):
        x = costs(ok[metrics].to_numpy(), modes)
        rows.loc[ok.index[pareto_mask(x)], "on_front"] = True
        ref = reference or [_beyond_worst(ok[m], d) for m, d in zip(metrics, modes)]
        hv = hypervolume(ok[metrics].to_numpy(), modes, ref)
    else:
        ref, hv = reference or [math.nan] * len(metrics), 0.0
    keep = [c for c in ["run_id", "technique", "lr", *[c for c in rows if c.startswith("params.")], *metrics,
                        "infeasible", "on_front"] if c in rows]
    return Front(sweep, objectives, rows[keep].sort_values(metrics[0], ascending=modes[0] == "min"), hv, ref)


def _beyond_worst(values: pd.Series, mode: str) -> float:
    """The reference of one objective: its worst feasible value, moved 10% of the range further (of the value
    itself when every trial scored the same), so that no trial on the front adds nothing."""
    lo, hi = float(values.min()), float(values.max())
    pad = 0.1 * ((hi - lo) or abs(hi) or 1.0)
    return lo - pad if mode == "max" else hi + pad


def fronts(experiment: str, tracking_uri: str | None = None) -> dict[str, Front]:
    """The front of every stage that declared more than one objective."""
    from analysis.runs import load_runs

    df = load_runs(experiment, tracking_uri)
    out = {}
    for sweep, s in stage_settings(experiment, tracking_uri).items():
        if len(s["objectives"]) > 1 and sweep in set(df.get("sweep", [])):
            out[sweep] = stage_front(sweep, df[df["sweep"] == sweep], s["objectives"], s["constraints"], df)
    return out


def cost_to_target(df: pd.DataFrame, metric: str, mode: str, fraction: float = 0.99) -> pd.DataFrame:
    """Per stage with a source: the first trial (in start order) within ``fraction`` of its source's ``metric``,
    after how many trials and trial-hours."""
    values = dict(zip(df["run_id"], df.get(metric, pd.Series(dtype=float))))
    rows = []
    for sweep, g in df[df["status"].isin(["FINISHED", "STOPPED_EARLY"])].groupby("sweep"):
        if "source_run" not in g or not g["source_run"].map(lambda v: isinstance(v, str) and v != "").any() or metric not in g:
            continue
        g = g.sort_values("start_time")
        hours = (g.get("time/train_s", 0).fillna(0) + g.get("time/eval_s", 0).fillna(0)).cumsum() / 3600
        hit = None
        for k, (i, r) in enumerate(g.iterrows(), 1):
            src = values.get(r["source_run"], math.nan)
            target = src * fraction if mode == "max" else src / fraction
            if r["status"] == "FINISHED" and src == src and (r[metric] >= target if mode == "max" else r[metric] <= target):
                hit = {"sweep": sweep, "trials": k, "trial_hours": float(hours.loc[i]), "run_id": r["run_id"]}
                break
        rows.append(hit or {"sweep": sweep, "trials": None, "trial_hours": None, "run_id": "not reached"})
    return pd.DataFrame(rows, columns=["sweep", "trials", "trial_hours", "run_id"])
