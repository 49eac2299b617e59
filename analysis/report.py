"""``squeeze report``: tables, plots and a recommendation in one folder, logged to MLflow.

    squeeze report --experiment quickstart --out reports/quickstart
"""

from __future__ import annotations

from pathlib import Path

from analysis import claims, flowchart, plots, tables
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
    passes = claims.pass_fail(df)
    t4 = tables.table4_wide(long, passes=passes)
    parts = {"table4": t4, "table3": tables.table3(df), "costs": tables.cost_table(df), "pass_fail": passes}
    task_tables = {task: tables.table4_wide(long, task, passes) for task in sorted(set(long["task"]))}
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
              "of the primary metric at n = N trials (Dodge et al. 2019). `>= 99%` / `>= 99.9%`: the technique keeps "
              "that fraction of the baseline's primary test metric by the lower end of its 95% bootstrap interval over "
              f"seeds (MLPerf style; `n/a`: fewer than {claims.MIN_UNITS} seeds to decide, see Claims).", ""]
    for task, t in task_tables.items():
        lines += [f"### {task}", "", tables.render(t.drop(columns="task"), "markdown"), ""]
        (out / f"table4_{task}.md").write_text(tables.render(t.drop(columns="task"), "markdown"))
    lines += [
              "## Costs", "", tables.render(parts["costs"], "markdown"), "",
              "## Table 3: settings", "", tables.render(parts["table3"], "markdown"), "", "## Recommendation", ""]
    lines += _recommendation(df, passes)
    lines += _claims_section(df, out)
    lines += _prune_section(df)
    lines += _search_section(df, experiment, tracking_uri, out)
    lines += _paper_section(df, out)
    lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out


def _recommendation(df, passes) -> list[str]:
    """Per task: the smallest technique that passes 99% of the baseline (lower end of its interval), else the one
    the point estimates favour, said to be undecided."""
    lines = []
    for task in tables.report_tasks(df):
        ok, why = baseline_above_chance(df, task)
        if not ok:
            lines += [f"- **{task}**: no recommendation: {why}."]
            continue
        try:
            rec = recommend(df, task).set_index("technique")
        except ValueError as exc:
            lines += [f"- {task}: {exc}"]
            continue
        p = passes[passes["task"] == task] if len(passes) else passes
        passed = [t for t in p.loc[p["99%"] == "pass", "technique"] if t in rec.index] if "99%" in p else []
        if passed:
            pick = min(passed, key=lambda t: rec.at[t, "size/disk_mb"])
            lines += [f"- **{task}**: `{pick}` is the smallest technique that keeps 99% of the baseline's primary metric "
                      f"by the lower end of its 95% interval ({rec.at[pick, 'size/disk_mb']:.3g} MB)."]
            continue
        point = rec[(rec["drop_pct"] <= 1.0) & (rec.index != "baseline")]
        if len(point):
            pick = point["size/disk_mb"].idxmin()
            row = p[p["technique"] == pick]
            interval = f" [{row['low'].iloc[0]:.3f}, {row['high'].iloc[0]:.3f}] over {row['units'].iloc[0]}" if len(row) else ""
            lines += [f"- **{task}**: no technique passes 99% by its interval; by the best trial alone `{pick}` is the "
                      f"smallest within 1% ({point.at[pick, 'size/disk_mb']:.3g} MB; fraction{interval}): undecided."]
        else:
            lines += [f"- **{task}**: no technique stays within 1% of the baseline."]
    return lines


def _claims_section(df, out: Path) -> list[str]:
    """The paper's claims with our estimates, intervals and verdicts; the data-driven flowchart (Figure 4)."""
    table = claims.claims_table(df)
    table.drop(columns=["_low", "_high"]).to_csv(out / "claims.csv", index=False)
    lines = ["", "## The paper's claims, checked", "",
             f"Each claim of the paper's Sections 4.1 to 4.5 as a bound on a change against a reference, with our estimate "
             f"and its 95% bootstrap interval over seeds (paired by seed; by seed and learning rate for a technique "
             f"applied to trained trials, as DQ is). Supported: the whole interval satisfies the bound; contradicted: "
             f"the whole interval violates it; inconclusive: it straddles the bound, or rests on fewer than "
             f"{claims.MIN_UNITS} units of a quantity that varies by seed. {claims.summary(table)}.", "",
             claims.markdown(table), "", "## What to try first (the paper's Figure 4, from these results)", ""]
    for fraction in (0.99, 0.95):
        t = flowchart.decisions(df, fraction)
        if t.empty:
            continue
        name = f"flowchart_{round(fraction * 100)}.png"
        flowchart.draw(t, out, name)
        t.to_csv(out / name.replace(".png", ".csv"), index=False)
        lines += [f"Eligible: keeps {fraction:.0%} of the baseline's primary metric by the lower end of its interval "
                  "(`provisional`: too few seeds to decide, estimate above it).", "", f"![flowchart {fraction:.0%}]({name})",
                  "", flowchart.markdown(t), ""]
    return lines


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
