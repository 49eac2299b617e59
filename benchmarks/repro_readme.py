"""Write the README's "Reproducing Best Way to Squeeze" tables from the committed repro results.

    python benchmarks/repro_readme.py      # reads benchmarks/results/repro/*/runs.parquet

For each task: the change vs baseline of every technique on every test metric (from the
best-validation trial, as in the paper's Table 4), the winner per metric, size and CPU latency;
then the paper's Table 4 side by side with ours and the agreement summary (``analysis.paper``),
read from ``../shared/paper/table4.csv`` or ``$SQUEEZE_PAPER_DIR``. Without it the paper's
columns are left out, with a note saying so.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
START, END = "<!-- repro:start -->", "<!-- repro:end -->"
CLAIMS_START, CLAIMS_END = "<!-- claims:start -->", "<!-- claims:end -->"
REPRO = ROOT / "benchmarks" / "results" / "repro"


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


def section(paper_table: pd.DataFrame | None) -> str:
    """The README section: our tables per task, each followed by the side-by-side with the paper when it is here."""
    from analysis import paper

    parts = []
    if paper_table is None:
        parts += ["The paper's columns are left out: its Table 4 (`../shared/paper/table4.csv`, or `$SQUEEZE_PAPER_DIR`) "
                  "is not on this machine.", ""]
    for task in ("sentiment", "ner", "dialogue"):
        f = ROOT / "benchmarks" / "results" / "repro" / task / "runs.parquet"
        if not f.is_file():
            v1 = f"benchmarks/results/repro/v1/{task}/report.md"
            parts += [f"**{task}**: v2 not run yet (`squeeze study sweeps/repro/{task}.yaml`)"
                      + (f"; the first reproduction's report, before the technique fixes: `{v1}`." if (ROOT / v1).is_file()
                         else "."), ""]
            continue
        df = pd.read_parquet(f)
        failed = int((df["status"] != "FINISHED").sum()) if "status" in df else 0
        df = df[df["status"] == "FINISHED"] if "status" in df else df
        parts += [f"**{task}**, v2 (baseline row: absolute test values; other rows: change vs baseline; "
                  f"{len(df)} finished trials{f', {failed} failed' if failed else ''}, "
                  f"report: `benchmarks/results/repro/{task}/report.md`)", "", task_table(df, task), ""]
        if paper_table is not None:
            sbs = paper.side_by_side(df, paper_table)
            if len(sbs) and (sbs["task"] == task).any():  # the paper may lack a task
                parts += [f"*{task}, side by side with the paper's Table 4:*", "",
                          paper.markdown(sbs, paper.agreement(sbs), task), ""]
    return "\n".join(parts)


def claims_section() -> str:
    """The paper's claims over the three committed studies together, the pass/fail table and the generated
    flowchart (written to benchmarks/results/repro/claims.csv, pass_fail.csv and flowchart_*.png)."""
    from analysis import claims, flowchart

    frames = [pd.read_parquet(REPRO / t / "runs.parquet") for t in ("sentiment", "ner", "dialogue")
              if (REPRO / t / "runs.parquet").is_file()]
    if not frames:
        return "No committed repro results yet."
    df = pd.concat(frames, ignore_index=True)
    table = claims.claims_table(df)
    table.drop(columns=["_low", "_high"]).to_csv(REPRO / "claims.csv", index=False)
    passes = claims.pass_fail(df)
    passes.to_csv(REPRO / "pass_fail.csv", index=False)
    parts = [f"Verdicts: {claims.summary(table)}.", "", claims.markdown(table), "",
             "Each technique's primary test metric as a fraction of the baseline's (for perplexity: the baseline's "
             "over the technique's), with its 95% interval; pass only where the lower end reaches the level:", "",
             passes.to_markdown(index=False, floatfmt=".4f"), ""]
    for fraction in (0.99, 0.95):
        t = flowchart.decisions(df, fraction)
        name = f"flowchart_{round(fraction * 100)}.png"
        flowchart.draw(t, REPRO, name)
        parts += [f"![what to try first, {fraction:.0%}](benchmarks/results/repro/{name})", ""]
    return "\n".join(parts)


def _replace(text: str, start: str, end: str, body: str) -> str:
    if start in text and end in text:
        return text[: text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]
    return text


def main() -> None:
    from analysis.paper import load_paper

    text_ = section(load_paper())
    claims_ = claims_section()
    readme = ROOT / "README.md"
    text = _replace(_replace(readme.read_text(), START, END, text_), CLAIMS_START, CLAIMS_END, claims_)
    readme.write_text(text)
    print(text_ + "\n" + claims_)


if __name__ == "__main__":
    main()
