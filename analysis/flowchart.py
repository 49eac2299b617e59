"""The paper's Figure 4 ("how to best compress an NLP model"), generated from the results instead of drawn by hand.

    from analysis.flowchart import decisions, draw
    t = decisions(df, fraction=0.99)      # one row per (can retrain?, task, target): the pick and the rows behind it
    draw(t, out_dir)                      # flowchart.png

Questions, in the paper's order: can you retrain (no: only post-training techniques, applied to the model you
have; yes: every technique) -> which task (and so which model family: an encoder for classification and tagging,
a decoder for generation) -> what to shrink: ``size`` (MB on disk), ``latency`` (CPU ms per example) or
``energy`` (with retraining: the training energy to produce the compressed model from the pre-trained one, its own
plus every source it needed, a DQ model's baseline, a PKD student's teacher, IMP's prune stage; without: the
compression's own, the trained model being at hand; training time where no energy counter measured it), each as a
ratio to the baseline's training.

A technique is eligible when it keeps ``fraction`` of the baseline's primary metric by the lower end of its 95%
interval over seeds (``analysis.claims.pass_fail``). Where none is, a technique whose interval rests on too few
seeds to decide but whose estimate reaches the fraction is offered as *provisional*. Among the eligible the pick
has the smallest target, as a ratio to the baseline's (median over the technique's replicates). Every row cites the
run ids it rests on.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.claims import pass_fail
from analysis.intervals import _finished, per_seed, training_energy
from analysis.tables import _post_training, report_tasks

TARGETS = {"size": "size/disk_mb", "latency": "latency/cpu_ms_per_example", "energy": "energy"}


def _family(task: str) -> str:
    from squeeze.registry import get_task

    try:
        return "decoder" if get_task(task).needs_decoder else "encoder"
    except KeyError:
        return "?"


def _energy_column(df: pd.DataFrame) -> tuple[str, str]:
    col = training_energy(df)
    return col, "kWh" if col.startswith("energy/") else "training s"


def _produce(df: pd.DataFrame, row: pd.Series, col: str, seen: frozenset = frozenset()) -> float:
    """A trial's training cost plus its sources' (recursively): what producing this model cost."""
    own = float(row.get(col, float("nan")))
    own = 0.0 if math.isnan(own) else own
    src = row.get("source_run")
    if isinstance(src, str) and src and src not in seen:
        found = df[df["run_id"] == src]
        if len(found):
            return own + _produce(df, found.iloc[0], col, seen | {src})
    return own


def _replicates(df: pd.DataFrame, task: str, tech: str) -> list[pd.Series]:
    reps = list(per_seed(df, task, tech).values())
    return reps or [r for _, r in _finished(df, task, tech).iterrows()]


def _target(df: pd.DataFrame, reps: list[pd.Series], target: str, energy_col: str, sources: bool = True) -> float:
    """Median over the replicates; energy with its sources' (``sources``) or the technique's own alone."""
    if target == "energy":
        vals = [_produce(df, r, energy_col) if sources else float(r.get(energy_col, float("nan"))) for r in reps]
    else:
        vals = [float(r.get(TARGETS[target], float("nan"))) for r in reps]
    vals = [v for v in vals if not math.isnan(v)]
    return float(pd.Series(vals).median()) if vals else float("nan")


def decisions(df: pd.DataFrame, fraction: float = 0.99) -> pd.DataFrame:
    """One row per (retrain, task, target): pick, its ratio to the baseline, its quality fraction and interval,
    whether it passed or is provisional, the runner-up, and the run ids behind the pick."""
    pf = pass_fail(df, fractions=(fraction,))
    col = next((c for c in pf.columns if c.endswith("%")), None) if len(pf) else None
    energy_col, energy_unit = _energy_column(df)
    rows = []
    for task in report_tasks(df):
        base = _replicates(df, task, "baseline")
        q = pf[pf["task"] == task].set_index("technique") if len(pf) else pd.DataFrame()
        for retrain in ("no", "yes"):
            techs = [t for t in q.index if retrain == "yes" or _post_training(t)]
            passed = [t for t in techs if q.at[t, col] == "pass"]
            provisional = [t for t in techs if q.at[t, col] == "n/a" and q.at[t, "fraction"] >= fraction]
            pool, status = (passed, "passes") if passed else (provisional, "provisional")
            for target in TARGETS:
                ref = _target(df, base, target, energy_col) if base else float("nan")
                ratios = {}
                for t in set(pool) | set(provisional):  # without retraining, the model at hand is paid for already
                    v = _target(df, _replicates(df, task, t), target, energy_col, sources=retrain == "yes")
                    ratios[t] = v / ref if ref and not math.isnan(ref) and not math.isnan(v) else float("nan")
                ranked = sorted((ratios[t], t) for t in pool if not math.isnan(ratios[t]))
                row = {"retrain": retrain, "task": task, "family": _family(task), "target": target,
                       "measured as": energy_unit if target == "energy" else TARGETS[target], "fraction": fraction}
                if not ranked:
                    closest = max(techs, key=lambda t: q.at[t, "fraction"]) if techs else None
                    why = (f"none keeps {fraction:.1%} of the baseline" +
                           (f"; closest {closest} at {q.at[closest, 'fraction']:.3f} [{q.at[closest, 'low']:.3f}, "
                            f"{q.at[closest, 'high']:.3f}]" if closest else ""))
                    rows.append({**row, "pick": "none", "status": "", "ratio": float("nan"), "quality": float("nan"),
                                 "interval": "", "runner-up": "", "why": why, "runs": ""})
                    continue
                ratio, pick = ranked[0]
                better = sorted((ratios[t], t) for t in provisional if t not in pool and ratios[t] < 0.99 * ratio)
                rows.append({**row, "pick": pick, "status": status, "ratio": ratio, "quality": q.at[pick, "fraction"],
                             "interval": f"[{q.at[pick, 'low']:.3f}, {q.at[pick, 'high']:.3f}] ({q.at[pick, 'units']})",
                             "runner-up": f"{ranked[1][1]} ({ranked[1][0]:.2f}x)" if len(ranked) > 1 else "",
                             "why": f"smallest {target} of {len(ranked)} {status.replace('passes', 'passing')}" +
                             ("; undecided (too few seeds) but smaller: " + ", ".join(f"{t} ({r:.2f}x)" for r, t in better)
                              if better else ""),
                             "runs": ", ".join(str(r)[:8] for r in _finished(df, task, pick)["run_id"])})
    return pd.DataFrame(rows)


def markdown(t: pd.DataFrame) -> str:
    cols = ["retrain", "task", "family", "target", "pick", "status", "ratio", "quality", "interval", "runner-up",
            "runs", "why"]
    out = t[cols].copy()
    out["ratio"] = out["ratio"].map(lambda v: "" if math.isnan(v) else f"{v:.2f}x")
    out["quality"] = out["quality"].map(lambda v: "" if math.isnan(v) else f"{v:.3f}")
    return out.to_markdown(index=False)


def draw(t: pd.DataFrame, out: Path, name: str = "flowchart.png") -> Path:
    """The decision tree as a figure: retrain? -> task -> one line per target with the pick, its ratio to the
    baseline and its quality fraction (a provisional pick is marked "?")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(t["task"])) if len(t) else []
    fig_w = max(8.0, 2.6 * len(tasks) * 2)
    fig, ax = plt.subplots(figsize=(fig_w, 6.2))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    box = {"boxstyle": "round,pad=0.4", "fc": "white", "ec": "black"}
    frac = float(t["fraction"].iloc[0]) if len(t) else 0.99
    ax.text(0.5, 0.93, f"Can you retrain?\n(eligible: keeps {frac:.1%} of the baseline, lower 95% bound)",
            ha="center", va="center", bbox=box, fontsize=10)
    for i, retrain in enumerate(("no", "yes")):
        x0 = 0.25 + 0.5 * i
        ax.annotate("", (x0, 0.78), (0.5, 0.88), arrowprops={"arrowstyle": "->"})
        label = "no: post-training only" if retrain == "no" else "yes: any technique"
        ax.text(x0, 0.75, label, ha="center", va="center", bbox={**box, "fc": "#eef"}, fontsize=10)
        for j, task in enumerate(tasks):
            x = 0.5 * i + (j + 0.5) * 0.5 / max(1, len(tasks))
            ax.annotate("", (x, 0.49), (x0, 0.71), arrowprops={"arrowstyle": "->"})
            lines = [f"{task} ({_family_label(t, task)})"]
            for _, r in t[(t["retrain"] == retrain) & (t["task"] == task)].iterrows():
                if r["pick"] == "none":
                    lines.append(f"{r['target']}: none keeps {frac:.1%}")
                else:
                    mark = "?" if r["status"] == "provisional" else ""
                    lines.append(f"{r['target']}: {r['pick']}{mark} {r['ratio']:.2f}x, q {r['quality']:.3f}")
            ax.text(x, 0.4, "\n".join(lines), ha="center", va="center", bbox={**box, "fc": "#efe"}, fontsize=8)
    ax.text(0.5, 0.2, "ratio: the pick's target over the baseline's (smaller is better); q: its primary metric as a "
            "fraction of the baseline's; ?: provisional (too few seeds to decide)", ha="center", fontsize=8)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out / name


def _family_label(t: pd.DataFrame, task: str) -> str:
    return str(t.loc[t["task"] == task, "family"].iloc[0])
