"""The paper's Figure 4 flowchart, driven by the measurements instead of drawn by hand.

    from analysis.recommend import recommend
    recommend(df, task="sentiment", max_size_mb=100, max_latency_ms=20, max_drop_pct=1.0)

Every constraint is optional. A technique qualifies through its best-validation trial; the
answer ranks the qualifying techniques by the test metric, then by size, and carries the rows
(run ids, measurements) that justify it. A latency limit fails a technique only when even the
fast end of its measured spread (p10) is above it: a difference inside the noise decides nothing.
No recommendation rests on a baseline that is not clearly above chance (``baseline_above_chance``).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.tables import best_trials, primary


def baseline_above_chance(df: pd.DataFrame, task: str) -> tuple[bool, str]:
    """Is the best baseline's test score clearly (2 standard errors) above what chance scores on the same test set?

    Chance is what the task logs next to its test metrics (``test/chance_<metric>``: the majority class for
    sentiment, no entity for NER, a random candidate for Hits@1); the standard error is a binomial one over
    ``test/n`` examples. Runs without those figures (older squeeze) are not judged.
    """
    best = best_trials(df[df["task"] == task])
    base = best[best["technique"] == "baseline"]
    if base.empty:
        return False, "no baseline trial"
    row = base.iloc[0]
    for col in [c for c in row.index if c.startswith("test/chance_") and pd.notna(row[c])]:
        metric = col.removeprefix("test/chance_")
        value, chance, n = row.get(f"test/{metric}"), float(row[col]), float(row.get("test/n", float("nan")))
        if value is None or pd.isna(value) or not n or math.isnan(n):
            continue
        margin = 2 * math.sqrt(chance * (1 - chance) / n)
        if float(value) <= chance + margin:
            return False, (f"the baseline's test {metric} {float(value):.4g} is not above chance ({chance:.4g} + "
                           f"{margin:.2g} for {int(n)} examples): compressing a model that has not learned the task "
                           "says nothing about compression")
    return True, "above chance"

CONSTRAINTS = {"max_size_mb": "size/disk_mb", "max_latency_ms": "latency/cpu_ms_per_example", "max_train_kwh": "energy/total_kwh"}


def recommend(df: pd.DataFrame, task: str, *, max_size_mb: float | None = None, max_latency_ms: float | None = None,
              max_drop_pct: float | None = None, max_train_kwh: float | None = None) -> pd.DataFrame:
    """Techniques meeting the constraints, best first, with why (``reason`` says what failed otherwise).

    Raises:
        ValueError: when the task has no finished trials or no baseline to measure the drop against.
    """
    name, mode = primary(df, task)
    best = best_trials(df[df["task"] == task])
    if best.empty:
        raise ValueError(f"no finished trials for task {task!r}")
    metric = f"test/{name}"
    base = best[best["technique"] == "baseline"]
    if max_drop_pct is not None and base.empty:
        raise ValueError(f"task {task!r} has no baseline trial to measure the drop against")
    ref = float(base[metric].iloc[0]) if len(base) else float("nan")
    rows = []
    for _, r in best.iterrows():
        drop = (ref - r[metric]) / abs(ref) * 100 if mode == "max" else (r[metric] - ref) / abs(ref) * 100
        fails = []
        limits = {"max_size_mb": max_size_mb, "max_latency_ms": max_latency_ms, "max_train_kwh": max_train_kwh}
        for arg, col in CONSTRAINTS.items():
            limit = limits[arg]
            if limit is None:
                continue
            value = r.get(col, float("nan"))
            low = r.get(col.replace("cpu_ms", "cpu_p10_ms"), value) if arg == "max_latency_ms" else value
            low = value if low is None or (isinstance(low, float) and math.isnan(low)) else low
            if value is None or (isinstance(value, float) and math.isnan(value)):
                fails.append(f"{col} not measured")
            elif low > limit:  # latency: even the fast end of the spread (p10) is over the limit
                fails.append(f"{col} {value:.4g} > {limit:g}")
        if max_drop_pct is not None and drop > max_drop_pct:
            fails.append(f"drop {drop:.2f}% > {max_drop_pct:g}%")
        rows.append({"technique": r["technique"], metric: r[metric], "drop_pct": drop, "size/disk_mb": r.get("size/disk_mb"),
                     "latency/cpu_ms_per_example": r.get("latency/cpu_ms_per_example"),
                     "energy/total_kwh": r.get("energy/total_kwh"), "ok": not fails, "reason": "; ".join(fails) or "meets all",
                     "run_id": r["run_id"]})
    out = pd.DataFrame(rows)
    out["_score"] = out[metric] if mode == "max" else -out[metric]
    out = out.sort_values(["ok", "_score", "size/disk_mb"], ascending=[False, False, True]).drop(columns="_score")
    return out.reset_index(drop=True)
