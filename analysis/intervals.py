"""Changes between techniques with 95% bootstrap intervals over seeds.

    from analysis.intervals import compare
    c = compare(df, "sentiment", "dq", "baseline", ["test/accuracy"])
    c.estimate, c.low, c.high, c.n, c.units       # % change of the means, its interval, how many units, of what

Which trials are the replicates of a technique on a task:

- a technique that trains (baseline, PKD, IMP, QAT): one per seed, that seed's best-validation trial: the paper's
  protocol (choose the learning rate on dev) applied within each seed, so a bad learning rate is not averaged in;
- a post-training technique (DQ, DQ+IMP, the one-shot menu): applied to trained source trials. Compared with the
  technique it was applied to, the units are those source trials (paired by seed *and* learning rate: each pair
  differs only by the technique); compared with anything else, one per seed, the trial derived from its source
  technique's pick in that seed.

Two techniques are paired on the seeds both have; when they share none, each is resampled on its own. The
estimate is the relative change of the means, ``(mean T / mean R - 1) * 100``; the interval is the 2.5 and 97.5
percentiles of that statistic over 10,000 resamples of the units (fixed generator seed, so a report is
reproducible). Several columns at once give one change per column per resample (``reduce="worst"`` keeps the
worst, direction-aware, so "no metric drops more than 1%" is tested jointly, not metric by metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.tables import _post_training, primary

RESAMPLES = 10_000


@dataclass
class Comparison:
    """A change of ``technique`` against ``reference`` on one task (percent of the reference)."""

    estimate: float
    low: float
    high: float
    n: int                       # units resampled
    units: str                   # "2 seeds", "4 trial pairs (seed x lr)", ...
    constant: bool               # every unit gave the same value on both sides: no sampling spread to resample
    values: dict = field(default_factory=dict)   # {"technique": [...], "reference": [...]} per unit, first column

    @property
    def interval(self) -> str:
        return "n/a" if math.isnan(self.low) else f"[{self.low:+.2f}%, {self.high:+.2f}%]"


def _finished(df: pd.DataFrame, task: str, technique: str) -> pd.DataFrame:
    rows = df[(df["task"] == task) & (df["technique"] == technique) & (df["status"] == "FINISHED")]
    return rows[~rows["stale"].astype(bool)] if "stale" in rows else rows


def training_energy(rows: pd.DataFrame) -> str:
    """The column that measures training energy over ``rows``: measured kWh where every finished trial has it (and
    some is above 0), else training time (a machine without NVML or readable RAPL)."""
    rows = rows[rows["status"] == "FINISHED"]
    col = "energy/train_total_kwh"
    if col in rows and len(rows) and rows[col].notna().all() and (rows[col] > 0).any():
        return col
    return "time/train_s"


def _source_technique(df: pd.DataFrame, rows: pd.DataFrame) -> str | None:
    """The technique the trials of ``rows`` were applied to (all from one source technique), else None."""
    if "source_run" not in rows:
        return None
    src = df[df["run_id"].isin(set(rows["source_run"].dropna()))]
    techs = set(src["technique"])
    return techs.pop() if len(techs) == 1 else None


def _best(rows: pd.DataFrame, df: pd.DataFrame, task: str) -> pd.Series | None:
    name, mode = primary(df, task)
    col = f"val/{name}"
    rows = rows.dropna(subset=[col]) if col in rows else rows.iloc[:0]
    if rows.empty:
        return None
    return rows.loc[rows[col].idxmax() if mode == "max" else rows[col].idxmin()]


def per_seed(df: pd.DataFrame, task: str, technique: str) -> dict[int, pd.Series]:
    """``{seed: trial row}``: the replicate of ``technique`` in each seed (see the module docstring)."""
    rows = _finished(df, task, technique)
    if rows.empty:
        return {}
    if _post_training(technique) and (src := _source_technique(df, rows)) is not None:
        out = {}
        for seed, pick in per_seed(df, task, src).items():
            derived = rows[rows["source_run"] == pick["run_id"]]
            if len(derived):
                out[seed] = derived.iloc[0]
        return out
    seeds = rows["seed"].fillna(0).astype(int) if "seed" in rows else pd.Series(0, index=rows.index)  # unseeded: one
    return {int(seed): row for seed, g in rows.groupby(seeds) if (row := _best(g, df, task)) is not None}


def _values(rows: list[pd.Series], columns: list[str], read) -> np.ndarray:
    """(units x columns) of ``read(row, column)``."""
    return np.array([[read(r, c) for c in columns] for r in rows], dtype=float).reshape(len(rows), len(columns))


def _units(df: pd.DataFrame, task: str, technique: str, reference: str) -> tuple[list, list, str, bool]:
    """(technique rows, reference rows, what a unit is, paired)."""
    rows = _finished(df, task, technique)
    ref_rows = _finished(df, task, reference)
    if _post_training(technique) and _source_technique(df, rows) == reference:
        by_id = ref_rows.set_index("run_id")
        pairs = [(r, by_id.loc[r["source_run"]]) for _, r in rows.iterrows() if r["source_run"] in by_id.index]
        return [p[0] for p in pairs], [p[1] for p in pairs], f"{len(pairs)} trial pairs (seed x lr)", True
    t, r = per_seed(df, task, technique), per_seed(df, task, reference)
    common = sorted(set(t) & set(r))
    if common:
        return [t[s] for s in common], [r[s] for s in common], f"{len(common)} seeds", True
    return list(t.values()), list(r.values()), f"{len(t)} + {len(r)} seeds (unpaired)", False


def _change(t: np.ndarray, r: np.ndarray, signs: np.ndarray, reduce: str | None) -> np.ndarray:
    """Per resample (leading axes) and column: the % change of the means, signed so that lower is worse when
    ``signs`` carries the metrics' directions; reduced over columns when asked."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (t.mean(axis=-2) / r.mean(axis=-2) - 1) * 100 * signs
    return c.min(axis=-1) if reduce == "worst" else c[..., 0]


def compare(df: pd.DataFrame, task: str, technique: str, reference: str, columns: list[str],
            modes: list[str] | None = None, reduce: str | None = None, value=None) -> Comparison:
    """The change of ``technique`` against ``reference`` in ``columns`` (first column, or the worst with
    ``reduce="worst"``: then ``modes`` gives each column's direction and the change is signed so that negative
    is worse). ``value(row, column)`` replaces reading the column from the row (a cost that adds a source's)."""
    t_rows, r_rows, units, paired = _units(df, task, technique, reference)
    read = value or (lambda row, col: float(row.get(col, float("nan"))))
    t, r = _values(t_rows, columns, read), _values(r_rows, columns, read)
    keep_t, keep_r = ~np.isnan(t).any(axis=1), ~np.isnan(r).any(axis=1)
    if paired:
        keep_t = keep_r = keep_t & keep_r
    t, r = t[keep_t], r[keep_r]
    signs = np.array([1.0 if m == "max" else -1.0 for m in modes] if modes else [1.0] * len(columns))
    if not len(t) or not len(r):
        return Comparison(float("nan"), float("nan"), float("nan"), 0, "not measured", False)
    estimate = float(_change(t, r, signs, reduce))
    rng = np.random.default_rng(0)
    it = rng.integers(0, len(t), size=(RESAMPLES, len(t)))
    ir = it if paired else rng.integers(0, len(r), size=(RESAMPLES, len(r)))
    boot = _change(t[it], r[ir], signs, reduce)
    boot = boot[np.isfinite(boot)]  # a resample whose reference mean is 0 has no relative change
    low, high = np.percentile(boot, [2.5, 97.5]) if boot.size else (float("nan"), float("nan"))
    constant = bool(np.ptp(t, axis=0).max() <= 1e-3 * np.abs(t).max() and np.ptp(r, axis=0).max() <= 1e-3 * np.abs(r).max())
    n = len(t) if paired else min(len(t), len(r))
    units = units if len(t) == len(t_rows) else f"{len(t)} of {units}"
    return Comparison(estimate, float(low), float(high), n, units, constant,
                      {"technique": t[:, 0].tolist(), "reference": r[:, 0].tolist()})
