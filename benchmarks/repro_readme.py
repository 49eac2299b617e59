"""Write the README's "Reproducing Best Way to Squeeze" tables from the committed repro results.

    python benchmarks/repro_readme.py      # reads benchmarks/results/repro/*/runs.parquet

For each task: the change vs baseline of every technique on every test metric (from the
best-validation trial, as in the paper's Table 4), the winner per metric, size and CPU latency.
The paper's own Table 4 values are not in this repository (see the README section for why).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
START, END = "<!-- repro:start -->", "<!-- repro:end -->"


def task_table(df: pd.DataFrame, task: str) -> str:
    from analysis import tables

    t = tables.table4(df)
    t = t[t["task"] == task]
    best = tables.best_trials(df[df["task"] == task]).set_index("technique")
    metrics = [m for m in tables.task_metrics(df, task) if m in set(t["metric"])]
    rows = []
    for tech in [x for x in tables.ORDER if x in set(t["technique"])]:
        cells = []
        for m in metrics:
            r = t[(t["technique"] == tech) & (t["metric"] == m)].iloc[0]
            if tech == "baseline":
                cells.append(f"{r['value']:.4g}")
            else:
                d = r["delta_pct"]
                cells.append(("n/a" if math.isnan(d) else f"{d:+.1f}% {r['arrow']}".strip()) + (" **best**" if r["best"] else ""))
        b = best.loc[tech]
        rows.append([tech] + cells + [f"{b['size/disk_mb']:.1f}", f"{b['latency/cpu_ms_per_example']:.1f}", str(int(r["N"]))])
    head = ["technique"] + metrics + ["MB on disk", "CPU ms/example", "N"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parts = []
    for task in ("sentiment", "ner", "dialogue"):
        f = ROOT / "benchmarks" / "results" / "repro" / task / "runs.parquet"
        if not f.is_file():
            parts.append(f"**{task}**: not run yet (`squeeze study sweeps/repro/{task}.yaml`).")
            continue
        df = pd.read_parquet(f)
        parts += [f"**{task}** (baseline row: absolute test values; other rows: change vs baseline; "
                  f"{len(df)} trials, report: `benchmarks/results/repro/{task}/report.md`)", "", task_table(df, task), ""]
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START in text and END in text:
        text = text[: text.index(START) + len(START)] + "\n" + "\n".join(parts) + "\n" + text[text.index(END):]
        readme.write_text(text)
    print("\n".join(parts))


if __name__ == "__main__":
    main()
