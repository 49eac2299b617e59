"""Our Table 4 next to the paper's (Best Way to Squeeze, Table 4), claim by claim.

    from analysis.paper import load_paper, side_by_side, agreement
    paper = load_paper()                   # ../shared/paper/table4.csv, or $SQUEEZE_PAPER_DIR; None when absent
    sbs = side_by_side(df, paper)          # task, metric, technique, paper value and change, ours, agree
    agreement(sbs)                         # per task: deltas agreeing in sign, winners per metric, Kendall tau

The paper's changes are (technique - baseline) / baseline, as ours. Which of our metrics stands for which of the
paper's columns is declared by each task (``Task.paper_metrics``: NER's "accuracy" is our token accuracy, TER is a
fraction in both). Only the techniques the paper ran (PKD, IMP, DQ, DQ+IMP) are compared; QAT is ours alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from analysis import tables

PAPER_TECHNIQUES = ["pkd", "imp", "dq", "dq+imp"]


def paper_dir() -> Path | None:
    """``$SQUEEZE_PAPER_DIR``, else ``../shared/paper`` beside the repository; None when neither exists."""
    for d in (os.environ.get("SQUEEZE_PAPER_DIR"), Path(__file__).resolve().parents[2] / "shared" / "paper"):
        if d and (Path(d) / "table4.csv").is_file():
            return Path(d)
    return None


def load_paper(directory: str | Path | None = None) -> pd.DataFrame | None:
    """The paper's Table 4 (task, metric, baseline, pkd, imp, dq, dq+imp), or None when it is not here."""
    d = Path(directory) if directory else paper_dir()
    return pd.read_csv(d / "table4.csv") if d is not None and (d / "table4.csv").is_file() else None


def _paper_metrics(df: pd.DataFrame, task: str) -> dict[str, str]:
    from squeeze.registry import get_task

    try:
        return dict(get_task(task).paper_metrics)
    except KeyError:
        return {}


def side_by_side(df: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """One row per task x paper metric x technique: the paper's value and change, ours, and whether the changes
    agree in sign (a change under 0.5% on either side counts as no change)."""
    ours = tables.table4(df)
    rows = []
    for task in sorted(set(ours["task"]) & set(paper["task"])):
        modes = tables.task_metrics(df, task)
        for p_metric, metric in _paper_metrics(df, task).items():
            pr = paper[(paper["task"] == task) & (paper["metric"] == p_metric)]
            if pr.empty:
                continue
            pr = pr.iloc[0]
            mine = ours[(ours["task"] == task) & (ours["metric"] == metric)].set_index("technique")
            for tech in ["baseline"] + PAPER_TECHNIQUES:
                p_val = float(pr[tech])
                p_delta = (p_val - pr["baseline"]) / abs(pr["baseline"]) * 100 if tech != "baseline" else float("nan")
                o_val = float(mine.at[tech, "value"]) if tech in mine.index else float("nan")
                o_delta = float(mine.at[tech, "delta_pct"]) if tech in mine.index and tech != "baseline" else float("nan")
                rows.append({"task": task, "metric": p_metric, "ours_as": metric, "mode": modes.get(metric, "max"),
                             "technique": tech, "paper": p_val, "paper_delta_pct": p_delta, "ours": o_val,
                             "ours_delta_pct": o_delta, "agree": _same_sign(p_delta, o_delta)})
    return pd.DataFrame(rows)


def _same_sign(a: float, b: float, tol: float = 0.5) -> float:
    if math.isnan(a) or math.isnan(b):
        return float("nan")
    sign = lambda x: 0 if abs(x) < tol else (1 if x > 0 else -1)  # noqa: E731
    return float(sign(a) == sign(b))


def _winner(g: pd.DataFrame, col: str, mode: str) -> set[str]:
    g = g[g["technique"] != "baseline"].dropna(subset=[col])
    if g.empty:
        return set()
    best = g[col].max() if mode == "max" else g[col].min()
    won = set(g.loc[g[col] == best, "technique"])
    return set() if len(won) == len(g) > 1 else won  # all tied: no winner (it would "agree" with any)


def agreement(sbs: pd.DataFrame) -> pd.DataFrame:
    """Per task: changes compared and agreeing in sign, metrics whose best compression technique agrees, and the
    Kendall tau of the techniques' order on the task's first paper metric (with its p-value)."""
    from scipy.stats import kendalltau

    rows = []
    for task, g in sbs.groupby("task"):
        compared = g["agree"].dropna()
        winners = []
        for metric, m in g.groupby("metric", sort=False):
            if m["ours"].isna().all():
                continue  # a metric of the paper we did not measure (BERTScore without a scorer): no winner to compare
            ours, theirs = _winner(m, "ours", m["mode"].iloc[0]), _winner(m, "paper", m["mode"].iloc[0])
            winners.append({"metric": metric, "paper": ", ".join(sorted(theirs)), "ours": ", ".join(sorted(ours)),
                            "agree": bool(ours & theirs)})
        first = g[(g["metric"] == g["metric"].iloc[0]) & (g["technique"] != "baseline")].dropna(subset=["ours"])
        tau, p = kendalltau(first["paper"], first["ours"]) if len(first) >= 3 else (float("nan"), float("nan"))
        rows.append({"task": task, "deltas": len(compared), "same_sign": int(compared.sum()),
                     "winners_agree": sum(w["agree"] for w in winners), "metrics": len(winners),
                     "rank_metric": g["metric"].iloc[0], "kendall_tau": float(tau), "tau_p": float(p),
                     "winners": winners})
    return pd.DataFrame(rows)


def markdown(sbs: pd.DataFrame, agree: pd.DataFrame, task: str) -> str:
    """The side-by-side table of one task and its agreement summary, as Markdown."""
    g = sbs[sbs["task"] == task]
    lines = ["| metric | technique | paper | paper Δ | ours | ours Δ | same sign |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}"  # noqa: E731
    delta = lambda v: "" if math.isnan(v) else f"{v:+.1f}%"  # noqa: E731
    for _, r in g.iterrows():
        same = "" if math.isnan(r["agree"]) else ("yes" if r["agree"] else "**no**")
        label = r["metric"] if r["metric"] == r["ours_as"] else f"{r['metric']} (ours: {r['ours_as']})"
        lines.append(f"| {label} | {r['technique']} | {fmt(r['paper'])} | {delta(r['paper_delta_pct'])} | {fmt(r['ours'])} "
                     f"| {delta(r['ours_delta_pct'])} | {same} |")
    a = agree[agree["task"] == task]
    if len(a):
        a = a.iloc[0]
        wins = "; ".join(f"{w['metric']}: paper {w['paper'] or '-'}, ours {w['ours'] or '-'}" for w in a["winners"])
        lines += ["", f"Agreement: {a['same_sign']} of {a['deltas']} changes have the paper's sign; the best compression "
                      f"technique agrees on {a['winners_agree']} of {a['metrics']} metrics ({wins}); Kendall tau of the "
                      f"techniques' order on {a['rank_metric']}: {a['kendall_tau']:.2f} (p = {a['tau_p']:.2f}, 4 techniques)."]
    return "\n".join(lines)
