"""``squeeze report``: tables, plots and a recommendation in one folder, logged to MLflow.

    squeeze report --experiment quickstart --out reports/quickstart
"""

from __future__ import annotations

from pathlib import Path

from analysis import plots, tables
from analysis.recommend import baseline_above_chance, recommend
from analysis.runs import load_prune_histories, load_runs

GRID_NOTE = ("**Note.** These trials come from a grid search. The EVP estimators (Dodge et al. 2019, 2021) assume "
             "i.i.d. draws of a random search, which a grid is not: read the curves as indicative.")


def _from_grid(experiment: str, uri: str | None) -> bool:
    from squeeze.tracking import PARENT_TAG, resolve_uri
    from squeeze.tracking import mlflow_client

    client = mlflow_client(resolve_uri(uri))
    exp = client.get_experiment_by_name(experiment)
    return bool(client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '1' and tags.`squeeze.search` != 'random'",
                                   max_results=1))


def build(experiment: str, out: str | Path, tracking_uri: str | None = None) -> Path:
    """Write report.md, the tables (md, tex, csv), runs.parquet and the PNGs into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = load_runs(experiment, tracking_uri)
    if df.empty:
        raise ValueError(f"experiment {experiment!r} has no trial runs to report")
    df.to_parquet(out / "runs.parquet", index=False)
    long = tables.table4(df)
    t4 = tables.table4_wide(long)
    parts = {"table4": t4, "table3": tables.table3(df), "costs": tables.cost_table(df)}
    task_tables = {task: tables.table4_wide(long, task) for task in sorted(set(long["task"]))}
    for name, t in parts.items():
        for fmt, ext in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
            (out / f"{name}.{ext}").write_text(tables.render(t, fmt))
    pngs = plots.all_plots(df, out, load_prune_histories(experiment, tracking_uri))
    lines = [f"# squeeze report: {experiment}", "", f"{len(df)} trials, {int((df['status'] == 'FINISHED').sum())} finished.", ""]
    if _from_grid(experiment, tracking_uri):
        lines += [GRID_NOTE, ""]
    if "stale" in df and df["stale"].astype(bool).any():
        stale = sorted(set(df.loc[df["stale"].astype(bool), "sweep"]))
        lines += [f"**Stale stages left out:** {', '.join(stale)}: their trials started from source trials that are no "
                  "longer current (the source stage ran again); `squeeze study` runs them again.", ""]
    lines += ["## Table 4: test metrics of the best-validation trial, change vs baseline", "",
              "`*` marks the best compression technique per metric; EVP is the expected best validation score "
              "of the primary metric at n = N trials (Dodge et al. 2019).", ""]
    for task, t in task_tables.items():
        lines += [f"### {task}", "", tables.render(t.drop(columns="task"), "markdown"), ""]
        (out / f"table4_{task}.md").write_text(tables.render(t.drop(columns="task"), "markdown"))
    lines += [
              "## Costs", "", tables.render(parts["costs"], "markdown"), "",
              "## Table 3: settings", "", tables.render(parts["table3"], "markdown"), "", "## Recommendation", ""]
    for task in tables.report_tasks(df):
        ok, why = baseline_above_chance(df, task)
        if not ok:
            lines += [f"- **{task}**: no recommendation: {why}."]
            continue
        try:
            rec = recommend(df, task, max_drop_pct=1.0)
        except ValueError as exc:
            lines += [f"- {task}: {exc}"]
            continue
        ok = rec[rec["ok"] & (rec["technique"] != "baseline")]
        pick = ok.sort_values("size/disk_mb").iloc[0] if len(ok) else None
        lines += [f"- **{task}**: " + (f"`{pick['technique']}` is the smallest technique within 1% of the baseline "
                                       f"({pick['size/disk_mb']:.3g} MB)." if pick is not None else "no technique stays within 1% of the baseline.")]
    lines += _prune_section(df)
    lines += _search_section(df, experiment, tracking_uri, out)
    lines += _paper_section(df, out)
    lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out


def _prune_section(df) -> list[str]:
    """The IMP prune stage's trials: schedule, events, reached sparsity, and whether the last prune was forced."""
    rows = df[df["technique"] == "imp_prune"]
    if rows.empty:
        return []
    cols = [c for c in ("sweep", "X", "Y", "params.imp_prune.step_of", "prune/events", "prune/final_sparsity",
                        "prune/forced", "test/ppl", "test/word_ppl", "run_id") if c in rows]
    out = ["", "## IMP prune stage", "", tables.render(rows[cols].reset_index(drop=True), "markdown"), ""]
    forced = rows[rows.get("prune/forced", 0) == 1] if "prune/forced" in rows else rows.iloc[0:0]
    if len(forced):
        out += [f"**{len(forced)} prune trial(s) reached X only by a forced final prune** (the schedule needed more "
                "steps than training ran): their masks were not found iteratively.", ""]
    return out


def _search_section(df, experiment: str, uri: str | None, out: Path) -> list[str]:
    """Stages with several objectives: their non-dominated front and its hypervolume; trials stopped early; the cost
    to reach 99% of the source."""
    from analysis.front import cost_to_target, fronts

    lines = []
    stopped = df[df["status"] == "STOPPED_EARLY"] if "status" in df else df.iloc[:0]
    if len(stopped):
        lines += ["", "## Early stopping", "", f"{len(stopped)} trials were stopped early by a scheduler "
                  f"({', '.join(f'{k}: {v}' for k, v in stopped.groupby('sweep').size().items())}); they have dev "
                  "scores per epoch and costs, no test score and no model.", ""]
    for sweep, f in fronts(experiment, uri).items():
        names = ", ".join(f"{o['metric']} ({o['mode']})" for o in f.objectives)
        ref = ", ".join(f"{v:.4g}" for v in f.reference)
        lines += ["", f"## Front: {sweep}", "", f"Objectives: {names}. Hypervolume {f.hypervolume:.4g} against the "
                  f"reference point ({ref}) (each objective's worst feasible value, 10% of its range further).", "",
                  tables.render(f.table.reset_index(drop=True), "markdown"), ""]
        f.table.to_csv(out / f"front_{sweep}.csv", index=False)
        lines += [f"![front {sweep}]({plots.stage_front(f, out).name})", ""]
    for task in tables.report_tasks(df):
        rows = df[df["task"] == task]
        from squeeze.registry import get_task

        t = get_task(task)
        hit = cost_to_target(rows, f"val/{t.primary_metric}", t.mode)
        if len(hit):
            lines += ["", f"## Cost to 99% of the source: {task}", "", "The first trial (in start order) whose dev "
                      f"{t.primary_metric} is within 1% of its source trial's.", "", tables.render(hit, "markdown"), ""]
    return lines


def _paper_section(df, out: Path) -> list[str]:
    """Table 4 next to the paper's, with the agreement summary (left out, with a note, where the paper's table is not
    on this machine)."""
    from analysis import paper

    table = paper.load_paper()
    if table is None:
        return ["", "## Compared with the paper", "", "The paper's Table 4 is not on this machine (`../shared/paper/table4.csv` "
                "or `$SQUEEZE_PAPER_DIR`): no comparison.", ""]
    sbs = paper.side_by_side(df, table)
    if sbs.empty:
        return []
    agree = paper.agreement(sbs)
    sbs.to_csv(out / "paper_comparison.csv", index=False)
    lines = ["", "## Compared with the paper (Best Way to Squeeze, Table 4)", "",
             "The paper's values and changes vs its baseline next to ours (best-validation trial of each technique); "
             "'same sign' counts a change under 0.5% as no change.", ""]
    for task in sorted(set(sbs["task"])):
        lines += [f"### {task}", "", paper.markdown(sbs, agree, task), ""]
    (out / "paper_comparison.md").write_text("\n".join(lines[2:]) + "\n")
    return lines


def print_table4(out: Path) -> None:
    for f in sorted(Path(out).glob("table4_*.md")):
        print(f"\n{f.stem.removeprefix('table4_')}\n{f.read_text()}")
