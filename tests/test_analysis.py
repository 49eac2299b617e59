"""Tables, plots and the recommendation on a fixture runs table (no MLflow needed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import plots, tables
from analysis.evp import expected_max
from analysis.recommend import recommend


def _runs() -> pd.DataFrame:
    rows = []

    def add(tech, val, test, size, lat, **extra):
        rows.append({"run_id": f"{tech}-{len(rows)}", "task": "sentiment", "technique": tech, "status": "FINISHED",
                     "model": "m", "lr": 1e-3, "val/accuracy": val, "test/accuracy": test, "test/f1": test - 0.01,
                     "test/precision": test, "test/recall": test, "size/disk_mb": size, "latency/cpu_ms_per_example": lat,
                     "time/train_s": 100.0, "energy/total_kwh": float("nan"), "co2/kg": float("nan"), **extra})

    add("baseline", 0.90, 0.80, 400, 10)
    add("baseline", 0.92, 0.82, 400, 10)      # best baseline by val
    add("pkd", 0.89, 0.81, 200, 5)
    add("pkd", 0.85, 0.90, 200, 5)            # higher test, lower val: not chosen
    add("dq", 0.91, 0.82, 100, 7)
    add("imp", 0.88, 0.78, 150, 10, X=0.7)
    add("baseline", float("nan"), float("nan"), 400, 10, status="FAILED")
    return pd.DataFrame(rows)


def test_table4_best_validation_trial_deltas_and_marks():
    t = tables.table4(_runs())
    acc = t[t["metric"] == "accuracy"].set_index("technique")
    assert acc.at["baseline", "value"] == pytest.approx(0.82)
    assert acc.at["pkd", "value"] == pytest.approx(0.81)          # the best-val pkd trial, not the best-test one
    assert acc.at["pkd", "delta_pct"] == pytest.approx((0.81 - 0.82) / 0.82 * 100)
    assert acc.at["pkd", "arrow"] == "↓" and acc.at["dq", "arrow"] == ""
    assert acc.at["dq", "best"] and not acc.at["pkd", "best"] and not acc.at["baseline", "best"]
    assert acc.at["baseline", "N"] == 2                           # the failed trial is dropped from EVP
    assert acc.at["baseline", "evp"] == pytest.approx(expected_max([0.90, 0.92, np.nan], 2))
    wide = tables.table4_wide(t, "sentiment")
    assert wide[wide["technique"] == "dq"]["accuracy"].iloc[0].endswith("*")
    for fmt in ("markdown", "latex", "csv"):
        assert "pkd" in tables.render(wide, fmt)


def test_min_metrics_mark_the_lowest():
    df = pd.DataFrame([{"run_id": str(i), "task": "dialogue", "technique": t, "status": "FINISHED", "model": "m",
                        "lr": 1e-3, "val/ppl": v, "test/ppl": v, "test/ter": v * 10} for i, (t, v) in
                       enumerate([("baseline", 5.0), ("pkd", 7.0), ("dq", 5.5)])])
    t = tables.table4(df)
    best = t[t["best"]]
    assert set(best["technique"]) == {"dq"} and set(best["metric"]) == {"ppl", "ter"}


def test_cost_table_never_sums_partially():
    c = tables.cost_table(_runs()).set_index("technique")
    assert c.at["dq", "size on disk (MB)"] == 100
    assert c.at["pkd", "train s (sweep)"] == 200
    assert math.isnan(c.at["pkd", "kWh (sweep)"])


def test_cost_table_sets_each_measured_speed_up_beside_its_size_ratio():
    df = _runs()
    df["latency/runtime"] = ["torch", "torch", "torch", "torch", "torch.ao dynamic int8", "torch dense kernels: no "
                             "speed-up from sparsity here", "torch"]
    c = tables.cost_table(df).set_index("technique")
    assert c.at["dq", "size ratio"] == pytest.approx(0.25) and c.at["dq", "CPU speed-up (measured)"] == pytest.approx(10 / 7)
    assert c.at["imp", "size ratio"] == pytest.approx(150 / 400) and c.at["imp", "CPU speed-up (measured)"] == 1.0
    assert c.at["imp", "served by"].startswith("torch dense kernels: no speed-up") and c.at["baseline", "size ratio"] == 1


def test_gptq_and_its_compositions_are_post_training_in_table3():
    df = _runs()
    df.loc[df["technique"] == "dq", "technique"] = "gptq+sparsegpt"
    assert tables.table3(df).set_index("technique").at["gptq+sparsegpt", "learning rates"] == "-"


def test_table3_settings():
    t = tables.table3(_runs()).set_index("technique")
    assert t.at["baseline", "trials"] == 3 and t.at["dq", "learning rates"] == "-" and t.at["imp", "X"] == "0.7"


def test_recommend_picks_by_data():
    df = _runs()
    rec = recommend(df, "sentiment", max_size_mb=250, max_drop_pct=1.5)
    # dq keeps 0.82 at 100 MB; pkd is within 1.5% (0.81) at 200 MB; imp drops 4.9%; baseline is 400 MB
    assert list(rec["technique"]) == ["dq", "pkd", "baseline", "imp"]
    assert list(rec["ok"]) == [True, True, False, False]
    by = rec.set_index("technique")
    assert by.at["baseline", "reason"] == "size/disk_mb 400 > 250"
    assert by.at["imp", "reason"].startswith("drop 4.88% > 1.5%")
    assert by.at["dq", "run_id"] == "dq-4"
    rec = recommend(df, "sentiment", max_latency_ms=6)
    assert list(rec[rec["ok"]]["technique"]) == ["pkd"]
    rec = recommend(df, "sentiment", max_train_kwh=1.0)
    assert not rec["ok"].any() and (rec["reason"] == "energy/total_kwh not measured").all()
    with pytest.raises(ValueError, match="no finished trials for task 'ner'"):
        recommend(df, "ner")


def test_pareto_front():
    p = pd.DataFrame({"c": [1, 2, 3, 4], "m": [0.5, 0.7, 0.6, 0.9]})
    assert list(plots.pareto_front(p, "c", "m", "max")["c"]) == [1, 2, 4]
    assert list(plots.pareto_front(p, "c", "m", "min")["c"]) == [1]


def test_every_plot_is_a_png(tmp_path):
    hist = pd.DataFrame({"run_id": ["a"] * 3, "model": ["tiny-bert"] * 3, "X": [0.5] * 3, "Y": [10] * 3,
                         "step": [10, 20, 30], "sparsity": [0.1, 0.19, 0.27], "ppl": [50.0, 60.0, 80.0]})
    paths = plots.all_plots(_runs(), tmp_path, hist)
    assert len(paths) == 5 and not list(tmp_path.glob("*co2*"))  # no CO2 measured: no empty placeholder figure
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, p


def test_evp_figure_gains_an_energy_panel_only_where_every_trial_measured_kwh(tmp_path):
    from PIL import Image

    df = _runs()
    two = Image.open(plots.evp_curves(df, "sentiment", tmp_path)).size  # kWh not measured: trials and hours
    df["energy/total_kwh"] = 0.01
    three = Image.open(plots.evp_curves(df, "sentiment", tmp_path)).size
    assert three[0] > two[0] * 1.3 and three[1] == two[1]


def test_the_study_run_counts_the_prune_stage_by_its_task_not_its_technique_name(tmp_path):
    """A pre-training trial (the trial's ``squeeze.pretraining`` tag) is the prune stage's, under any technique name."""
    from squeeze import tracking
    from squeeze.driver.sweep import cost_totals

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.ensure_experiment(uri, "share")
    client = tracking.mlflow_client(uri)
    for i, (tags, train_s) in enumerate([({tracking.PRETRAINING_TAG: "1", "technique": "my_pruner"}, 30.0),
                                         ({tracking.PRETRAINING_TAG: "0", "technique": "imp"}, 10.0),
                                         ({"technique": "imp_prune"}, 60.0)]):  # a run from before the tag
        run = client.create_run(exp, tags={tracking.TRIAL_TAG: f"t{i}", **tags}).info.run_id
        client.log_metric(run, "time/train_s", train_s)
        client.set_terminated(run, "FINISHED")
    study = tracking.log_study_totals(uri, exp, "share", cost_totals)
    m = client.get_run(study).data.metrics
    assert m["study/time/train_s"] == 100.0 and m["study/prune/time/train_s"] == 90.0
    assert m["study/prune_share/time/train_s"] == 0.9


def test_load_runs_keeps_the_latest_run_of_a_stage(tmp_path):
    """A stage run again supersedes its earlier trials instead of doubling the population."""
    import time

    from analysis.runs import load_runs
    from squeeze import tracking

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.ensure_experiment(uri, "again")
    ids = []
    for attempt in range(2):
        parent = tracking.start_parent(uri, exp, "baseline", "x: 1", {"task": "sentiment"})
        run = tracking.TrialRun(uri, exp, parent, f"t{attempt}", f"t{attempt}", {"task": "sentiment", "technique": "finetune",
                                                                                tracking.SWEEP_TAG: "baseline"})
        run.log_metrics({"val/accuracy": 0.5 + attempt / 10}, step=0)
        run.finish()
        ids.append(run.run_id)
        time.sleep(0.01)
    df = load_runs("again", uri)
    assert list(df["run_id"]) == [ids[1]] and df["val/accuracy"].iloc[0] == 0.6
    assert len(load_runs("again", uri, latest_only=False)) == 2


def test_the_side_by_side_with_the_paper_on_a_hand_checked_example(monkeypatch):
    """Signs with a 0.5% dead band, the best compression technique per metric, Kendall tau on the first metric.

    accuracy: paper 0.938 | pkd -0.75%, imp -6.8%, dq -0.43% (no change), dq+imp -5.9%; ours 0.90 | -2.2%, -11.1%, 0%,
    -10%: 4 of 4 signs agree, both pick dq, the orders are identical (tau 1). f1: paper -0.85%, -5.8%, -1.1%, -6.0%;
    ours +5.6%, -11.1%, 0%, -10%: pkd and dq disagree (2 of 4), both pick pkd."""
    import pandas as pd

    from analysis import paper

    ours = {"accuracy": [0.90, 0.88, 0.80, 0.90, 0.81], "f1": [0.90, 0.95, 0.80, 0.90, 0.81]}
    techs = ["baseline", "pkd", "imp", "dq", "dq+imp"]
    rows = [{"task": "sentiment", "metric": m, "technique": t, "value": v,
             "delta_pct": (v - vals[0]) / vals[0] * 100 if t != "baseline" else float("nan")}
            for m, vals in ours.items() for t, v in zip(techs, vals)]
    monkeypatch.setattr(paper.tables, "table4", lambda df: pd.DataFrame(rows))
    table = pd.DataFrame([{"task": "sentiment", "metric": "accuracy", "baseline": 0.938, "pkd": 0.931, "imp": 0.874,
                           "dq": 0.934, "dq+imp": 0.883},
                          {"task": "sentiment", "metric": "f1", "baseline": 0.937, "pkd": 0.929, "imp": 0.883,
                           "dq": 0.927, "dq+imp": 0.881},
                          {"task": "sentiment", "metric": "precision", "baseline": 0.951, "pkd": 0.946, "imp": 0.856,
                           "dq": 0.965, "dq+imp": 0.900}])  # not measured by "us": no sign, no winner, not counted
    sbs = paper.side_by_side(pd.DataFrame({"task": ["sentiment"]}), table)
    assert sbs.loc[sbs["metric"] == "precision", "agree"].isna().all()
    agree = {(r.metric, r.technique): r.agree for r in sbs.itertuples() if r.technique != "baseline" and r.metric != "precision"}
    assert agree == {("accuracy", "pkd"): 1.0, ("accuracy", "imp"): 1.0, ("accuracy", "dq"): 1.0,
                     ("accuracy", "dq+imp"): 1.0, ("f1", "pkd"): 0.0, ("f1", "imp"): 1.0, ("f1", "dq"): 0.0,
                     ("f1", "dq+imp"): 1.0}
    summary = paper.agreement(sbs).iloc[0]
    assert (summary["deltas"], summary["same_sign"], summary["winners_agree"], summary["metrics"]) == (8, 6, 2, 2)
    assert [(w["paper"], w["ours"]) for w in summary["winners"]] == [("dq", "dq"), ("pkd", "pkd")]
    assert summary["rank_metric"] == "accuracy" and summary["kendall_tau"] == pytest.approx(1.0)
    assert "6 of 8 changes have the paper's sign" in paper.markdown(sbs, paper.agreement(sbs), "sentiment")
    tied = sbs.assign(ours=sbs["ours"].where(sbs["technique"] == "baseline", 0.5))  # every technique tied: no winner
    assert paper.agreement(tied).iloc[0]["winners_agree"] == 0


def test_the_repro_readme_puts_the_paper_beside_ours_and_says_so_when_the_paper_is_absent():
    """benchmarks/repro_readme.py on the committed repro results: with a Table 4 the side-by-side and its agreement
    summary follow our table; without one (a machine without ../shared) a note replaces them."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import repro_readme

    table = pd.DataFrame([{"task": "sentiment", "metric": "accuracy", "baseline": 0.938, "pkd": 0.931, "imp": 0.874,
                           "dq": 0.934, "dq+imp": 0.883}])
    with_paper = repro_readme.section(table)
    assert "side by side with the paper's Table 4" in with_paper and "changes have the paper's sign" in with_paper
    assert "| accuracy | dq | 0.934 | -0.4% |" in with_paper
    without = repro_readme.section(None)
    assert "The paper's columns are left out" in without and "side by side" not in without
    for task in ("sentiment", "ner", "dialogue"):  # a task v2 has not run says so and points at v1's report
        v2 = (repro_readme.ROOT / "benchmarks" / "results" / "repro" / task / "runs.parquet").is_file()
        assert (f"**{task}**, v2 (" in without) == v2 and (f"**{task}**: v2 not run yet" in without) == (not v2)
        assert v2 or f"benchmarks/results/repro/v1/{task}/report.md" in without
