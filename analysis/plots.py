"""The paper's figures and Pareto fronts as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.evp import expected_max_curve  # noqa: E402
from analysis.tables import primary, report_tasks  # noqa: E402

BETTER = {"max": "higher is better", "min": "lower is better"}


def _label(name: str, mode: str) -> str:
    """An axis label that says which way is better (every cost here is lower-is-better)."""
    return f"{name} ({BETTER[mode]})"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evp_curves(df: pd.DataFrame, task: str, out: Path, budget: str = "time/train_s",
               energy: str = "energy/total_kwh") -> Path:
    """Figure 3a: EVP of the primary validation metric per technique with its 95% bootstrap band, against trials,
    against training hours and, where every trial measured it, against kWh."""
    name, mode = primary(df, task)
    rows = df[(df["task"] == task) & (df["status"] == "FINISHED")]
    costs = {"hours": (budget, 1 / 3600, "training hours (expected, cumulative)"),
             "kwh": (energy, 1.0, "energy kWh (expected, cumulative)")}
    measured = [k for k, (col, _, _) in costs.items() if col in rows and rows[col].notna().all() and len(rows)]
    fig, axes = plt.subplots(1, 1 + len(measured), figsize=(5.5 * (1 + len(measured)), 4), squeeze=False)
    axes = axes[0]
    for tech, g in rows.groupby("technique"):
        scores = g[f"val/{name}"].to_numpy(dtype=float)
        if np.isnan(scores).all():
            continue
        c = expected_max_curve(scores, mode=mode, n_bootstrap=300)
        axes[0].plot(c["n"], c["mean"], marker="o", label=tech)
        axes[0].fill_between(c["n"], c["lower"], c["upper"], alpha=0.2)
        for ax, k in zip(axes[1:], measured):
            col, scale, _ = costs[k]
            cb = expected_max_curve(scores, mode=mode, budgets=g[col].to_numpy(dtype=float) * scale, n_bootstrap=300)
            ax.plot(cb["budget"], cb["mean"], marker="o", label=tech)
            ax.fill_between(cb["budget"], cb["lower"], cb["upper"], alpha=0.2)
    axes[0].set(xlabel="trials (n)", ylabel=_label(f"expected best val {name}", mode),
                title=f"{task}: EVP, 95% bootstrap band")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # n is a count of trials: no 1.2, 1.4 ticks
    for ax, k in zip(axes[1:], measured):
        ax.set(xlabel=costs[k][2], ylabel=_label(f"expected best val {name}", mode), title=f"{task}: EVP vs {k}")
    axes[0].legend(fontsize=8)
    return _save(fig, out / f"evp_{task}.png")


def imp_curve(df: pd.DataFrame, task: str, out: Path) -> Path:
    """Figure 3b: test metric of IMP (and DQ+IMP) against sparsity X, baseline as a line."""
    name, _ = primary(df, task)
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = df[(df["task"] == task) & (df["status"] == "FINISHED")]
    for tech in ("imp", "dq+imp"):
        g = rows[rows["technique"] == tech].dropna(subset=["X"]).groupby("X")[f"test/{name}"].agg(["mean", "max"])
        if len(g):
            ax.plot(g.index * 100, g["max"], marker="o", label=f"{tech} (best)")
    base = rows[rows["technique"] == "baseline"][f"test/{name}"]
    if len(base):
        ax.axhline(base.max() if primary(df, task)[1] == "max" else base.min(), color="grey", ls="--", label="baseline")
    ax.set(xlabel="sparsity X (%)", ylabel=_label(f"test {name}", primary(df, task)[1]), title=f"{task}: IMP")
    ax.legend(fontsize=8)
    return _save(fig, out / f"imp_{task}.png")


def prune_ppl(hist: pd.DataFrame, out: Path) -> Path:
    """Figure 2: pre-training perplexity against sparsity along each (X, Y) prune schedule."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model, x, y), g in hist.groupby(["model", "X", "Y"]):
        ax.plot(g["sparsity"] * 100, g["ppl"], marker=".", label=f"{model} X={x:g} Y={y:g}")
    ax.set(xlabel="sparsity (%)", ylabel=_label("validation perplexity", "min"), title="IMP prune stage", yscale="log")
    if len(hist):
        ax.legend(fontsize=7)
    return _save(fig, out / "prune_ppl.png")


def pareto_front(points: pd.DataFrame, cost: str, metric: str, mode: str, lo: str | None = None,
                 hi: str | None = None) -> pd.DataFrame:
    """Rows not dominated: no other row is at most as costly and at least as good, and better in one.

    With ``lo``/``hi`` (a measured spread, latency's p10/p90), costs whose spreads overlap count as equal: a
    cost difference inside the noise never makes one row dominate another.
    """
    p = points.dropna(subset=[cost, metric])
    sign = 1 if mode == "max" else -1
    low = p[lo].fillna(p[cost]) if lo in p else p[cost]
    high = p[hi].fillna(p[cost]) if hi in p else p[cost]
    keep = []
    for i, r in p.iterrows():
        tie = (low <= high[i]) & (low[i] <= high)
        cheaper = high < low[i]
        dominated = (((p[cost] <= r[cost]) | tie) & (sign * p[metric] >= sign * r[metric]) &
                     (cheaper | (sign * p[metric] > sign * r[metric]))).any()
        if not dominated:
            keep.append(i)
    return p.loc[keep].sort_values(cost)


def measured(df: pd.DataFrame, task: str, cost: str) -> bool:
    """Did any finished trial of the task measure ``cost`` (a machine without energy counters logs no CO2)?"""
    rows = df[(df["task"] == task) & (df["status"] == "FINISHED")]
    return cost in rows and bool(rows[cost].notna().any()) and bool((rows[cost] != 0).any())


def pareto(df: pd.DataFrame, task: str, cost: str, out: Path) -> Path | None:
    """Test metric of every trial against a cost, the Pareto front drawn through the best; None (no file) when the
    cost was not measured."""
    if not measured(df, task, cost):
        return None
    name, mode = primary(df, task)
    metric = f"test/{name}"
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = df[(df["task"] == task) & (df["status"] == "FINISHED")]
    for tech, g in rows.groupby("technique"):
        ax.scatter(g[cost], g[metric], label=tech, s=18)
    spread = (cost.replace("_ms_", "_p10_ms_"), cost.replace("_ms_", "_p90_ms_")) if "latency" in cost else (None, None)
    front = pareto_front(rows, cost, metric, mode, *spread)
    ax.plot(front[cost], front[metric], color="black", lw=1, label="Pareto front")
    ax.legend(fontsize=8)
    ax.set(xlabel=_label(cost, "min"), ylabel=_label(metric, mode), title=f"{task}: {metric} vs {cost}")
    return _save(fig, out / f"pareto_{task}_{cost.replace('/', '_')}.png")


def stage_front(front, out: Path) -> Path:
    """A stage's trials on its first two objectives, the front marked and joined, infeasible trials hollow."""
    t = front.table
    (x, mx), (y, my) = [(o["metric"], o["mode"]) for o in front.objectives[:2]]
    fig, ax = plt.subplots(figsize=(6, 4))
    bad = t[t["infeasible"] != ""]
    ok = t[(t["infeasible"] == "") & ~t["on_front"]]
    on = t[t["on_front"]].sort_values(x)
    ax.scatter(ok[x], ok[y], s=18, color="tab:gray", label="dominated")
    ax.scatter(bad[x], bad[y], s=18, facecolors="none", edgecolors="tab:red", label="breaks a constraint")
    ax.plot(on[x], on[y], "o-", color="black", ms=5, lw=1, label="front")
    ax.set(xlabel=_label(x, mx), ylabel=_label(y, my),
           title=f"{front.sweep}: hypervolume {front.hypervolume:.4g}")
    ax.legend(fontsize=8)
    return _save(fig, out / f"front_{front.sweep}.png")


def all_plots(df: pd.DataFrame, out: Path, prune_hist: pd.DataFrame | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in report_tasks(df):
        paths += [evp_curves(df, task, out), imp_curve(df, task, out)]
        paths += [p for c in ("size/disk_mb", "latency/cpu_ms_per_example", "co2/kg") if (p := pareto(df, task, c, out))]
    if prune_hist is not None and len(prune_hist):
        paths.append(prune_ppl(prune_hist, out))
    return paths
