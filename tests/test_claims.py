"""The paper's claims with intervals over seeds, pass/fail at a fraction of the baseline, and the generated flowchart,
on hand-built runs whose answers are worked out by hand (no MLflow needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import claims, flowchart, intervals

LRS = (1e-4, 3e-4)


def _study(seeds=(0, 1, 2), dq_factor=0.98, pkd_scores=None, task="sentiment") -> pd.DataFrame:
    """Per seed, two baseline trials (lr 3e-4 the better on dev); DQ applied to every baseline trial scoring
    ``dq_factor`` of its source; PKD per seed; an IMP per seed from one prune trial; sizes fixed."""
    rows = []

    def add(tech, seed, lr, val, test, size, lat, train_s, source="", **extra):
        rid = f"{tech}-{task}-{len(rows)}"
        rows.append({"run_id": rid, "task": task, "technique": tech, "status": "FINISHED", "seed": seed, "lr": lr,
                     "val/accuracy": val, "test/accuracy": test, "test/f1": test, "size/disk_mb": size,
                     "size/embeddings_mb": 40.0, "latency/cpu_ms_per_example": lat, "time/train_s": train_s,
                     "energy/train_total_kwh": float("nan"), "source_run": source, **extra})
        return rid

    prune = add("imp_prune", 0, 5e-5, float("nan"), float("nan"), 60.0, 30.0, 300.0)
    rows[-1]["task"] = "lm"
    for i, seed in enumerate(seeds):
        weak = add("baseline", seed, LRS[0], 0.70, 0.70 + 0.01 * i, 100.0, 30.0, 100.0)
        good = add("baseline", seed, LRS[1], 0.90, 0.80 + 0.01 * i, 100.0, 30.0, 100.0)
        for src, score in ((weak, 0.70 + 0.01 * i), (good, 0.80 + 0.01 * i)):
            add("dq", 0, float("nan"), score * dq_factor, score * dq_factor, 64.0, 8.0 + 0.1 * i, 0.1, source=src)
        pk = (pkd_scores or [0.79, 0.795, 0.80])[i]
        add("pkd", seed, LRS[0], 0.88, pk, 76.0, 15.0, 50.0, source=good)
        add("pkd", seed, LRS[1], 0.60, 0.99, 76.0, 15.0, 50.0, source=good)  # bad on dev: never the seed's pick
        add("imp", seed, LRS[1], 0.85, 0.75, 70.0, 30.0, 100.0, source=prune, X=0.7)
    return pd.DataFrame(rows)


def test_each_seed_contributes_its_best_validation_trial():
    picks = intervals.per_seed(_study(), "sentiment", "baseline")
    assert sorted(picks) == [0, 1, 2]
    assert [picks[s]["lr"] for s in (0, 1, 2)] == [3e-4] * 3
    assert [picks[s]["test/accuracy"] for s in (0, 1, 2)] == pytest.approx([0.80, 0.81, 0.82])
    dq = intervals.per_seed(_study(), "sentiment", "dq")  # DQ per seed: the copy of that seed's chosen baseline
    assert [dq[s]["test/accuracy"] for s in (0, 1, 2)] == pytest.approx([0.784, 0.7938, 0.8036])


def test_a_technique_applied_to_trained_trials_is_paired_with_each_source():
    """Every DQ model scores exactly 98% of its own source: paired by source trial, every resample gives -2%, so the
    interval is the point; resampled unpaired, the sources' spread (0.70..0.82) would widen it to several percent."""
    c = intervals.compare(_study(), "sentiment", "dq", "baseline", ["test/accuracy"])
    assert c.units == "6 trial pairs (seed x lr)" and c.n == 6
    assert c.estimate == pytest.approx(-2.0) and c.low == pytest.approx(-2.0) and c.high == pytest.approx(-2.0)


def test_a_trained_technique_is_paired_by_seed_and_the_estimate_is_the_change_of_means():
    df = _study()
    c = intervals.compare(df, "sentiment", "pkd", "baseline", ["test/accuracy"])
    assert c.units == "3 seeds" and c.values["technique"] == pytest.approx([0.79, 0.795, 0.80])
    assert c.estimate == pytest.approx((np.mean([0.79, 0.795, 0.80]) / np.mean([0.80, 0.81, 0.82]) - 1) * 100)
    per_seed = [(0.79 / 0.80 - 1) * 100, (0.795 / 0.81 - 1) * 100, (0.80 / 0.82 - 1) * 100]
    assert min(per_seed) - 1e-9 <= c.low <= c.estimate <= c.high <= max(per_seed) + 1e-9


def test_worst_of_several_metrics_is_signed_so_negative_is_worse():
    df = _study()
    df["test/ppl"] = 10.0
    df.loc[df["technique"] == "pkd", "test/ppl"] = 11.0                       # +10% perplexity: 10% worse
    c = intervals.compare(df, "sentiment", "pkd", "baseline", ["test/accuracy", "test/ppl"], ["max", "min"], "worst")
    assert c.estimate == pytest.approx(-10.0)
    acc = intervals.compare(df, "sentiment", "pkd", "baseline", ["test/accuracy"])  # alone: only -1.85%
    assert acc.estimate == pytest.approx((0.795 / 0.81 - 1) * 100)


@pytest.mark.parametrize("seeds,expected", [((0, 1, 2), "contradicted"), ((0,), "inconclusive")])
def test_a_change_decides_on_enough_units_and_a_size_on_any(seeds, expected):
    """-2% on every pair: 6 pairs decide; the 2 pairs of one seed do not (the scores differ between them, so nothing
    says the next pair would not); a size, the same on every unit, decides on those 2 pairs."""
    df = _study(seeds)
    c = intervals.compare(df, "sentiment", "dq", "baseline", ["test/accuracy"])
    assert claims.verdict(c, ">=", -1.0)[0] == expected      # the bound -1% is violated on every unit
    size = intervals.compare(df, "sentiment", "dq", "baseline", ["size/disk_mb"])
    assert size.constant and claims.verdict(size, "<=", -40.0)[0] == "contradicted"


def test_the_verdict_rule():
    def comp(est, lo, hi, n=5, constant=False):
        return intervals.Comparison(est, lo, hi, n, f"{n} seeds", constant)

    assert claims.verdict(comp(-0.5, -0.8, -0.2), ">=", -1.0)[0] == "supported"
    assert claims.verdict(comp(-3.0, -4.0, -2.0), ">=", -1.0)[0] == "contradicted"
    assert claims.verdict(comp(-1.0, -2.0, 0.5), ">=", -1.0) == ("inconclusive", "the interval straddles -1%")
    assert claims.verdict(comp(-3.0, -4.0, -2.0, n=2), ">=", -1.0) == (
        "inconclusive", "leans contradicted, but on 2 seeds (a decision needs 3)")
    assert claims.verdict(comp(-3.0, -3.0, -3.0, n=2, constant=True), ">=", -1.0)[0] == "contradicted"
    assert claims.verdict(comp(5.0, 2.0, 8.0), "within", 10.0)[0] == "supported"
    assert claims.verdict(comp(5.0, -12.0, 12.0), "within", 10.0)[0] == "inconclusive"   # covers the band: undecided
    assert claims.verdict(comp(15.0, 11.0, 19.0), "within", 10.0)[0] == "contradicted"
    assert claims.verdict(intervals.Comparison(float("nan"), float("nan"), float("nan"), 0, "", False), ">", 0)[0] == \
        "not measured"


def test_claims_table_on_one_task_checks_its_claims_and_leaves_other_tasks_out():
    t = claims.claims_table(_study()).set_index("claim")
    assert set(t["task"]) == {"sentiment"}                          # no NER or dialogue rows, no cross-task row
    dq = t.loc["dq-quality"]
    assert dq["verdict"] == "contradicted" and dq["ours"] == pytest.approx(-2.0) and dq["measured as"] == "test accuracy"
    size = t.loc["dq-size-bert"]                                     # 64 / 100 MB: -36%, not the paper's -40%
    assert size["ours"] == pytest.approx(-36.0) and size["verdict"] == "contradicted"
    assert "embeddings are 40% of the baseline's size here" in size["why"]
    assert t.loc["dq-latency", "verdict"] == "supported"             # 8 ms vs 30 ms on every pair
    energy = t.loc["imp-prune-energy"]                               # (100 s + the 300 s prune trial) / 100 s
    assert energy["ours"] == pytest.approx(300.0) and energy["measured as"].startswith("training time")
    assert t.loc["imp-time", "verdict"] == "supported"               # fine-tuning alone: the baseline's 100 s
    missing = claims.claims_table(_study().query("technique != 'pkd'")).set_index("claim")
    assert missing.loc["pkd-size", "verdict"] == "not measured"


def test_the_cross_task_claim_needs_two_tasks_decided_with_opposite_signs():
    def task_runs(task, factor):
        df = _study(task=task)
        df = df[df["technique"] != "dq"]
        imp = df[df["technique"] == "imp"]
        extra = imp.assign(technique="dq+imp", source_run=imp["run_id"], run_id=imp["run_id"] + "-dq",
                           **{"test/accuracy": imp["test/accuracy"] * factor, "test/f1": imp["test/f1"] * factor})
        return pd.concat([df, extra], ignore_index=True)

    up_down = pd.concat([task_runs("sentiment", 1.02), task_runs("ner", 0.9)], ignore_index=True)
    up_down.loc[up_down["task"] == "ner", "val/f1"] = up_down["val/accuracy"]
    row = claims.claims_table(up_down).set_index("claim").loc["dqimp-inconsistent"]
    assert row["verdict"] == "supported" and "sentiment +2.00%" in row["95% interval"]
    same = pd.concat([task_runs("sentiment", 0.95), task_runs("ner", 0.9)], ignore_index=True)
    same.loc[same["task"] == "ner", "val/f1"] = same["val/accuracy"]
    assert claims.claims_table(same).set_index("claim").loc["dqimp-inconsistent", "verdict"] == "contradicted"


def test_pass_fail_needs_the_lower_end_of_the_interval():
    df = _study(dq_factor=0.995)
    p = claims.pass_fail(df).set_index("technique")
    assert p.loc["dq", "fraction"] == pytest.approx(0.995) and p.loc["dq", "low"] == pytest.approx(0.995)
    assert p.loc["dq", "99%"] == "pass" and p.loc["dq", "99.9%"] == "fail"
    two = claims.pass_fail(_study(seeds=(0, 1), pkd_scores=[0.80, 0.81])).set_index("technique")
    assert two.loc["pkd", "fraction"] == pytest.approx(1.0) and two.loc["pkd", "99%"] == "n/a"   # 2 seeds: undecided


def test_pass_fail_on_a_lower_is_better_metric_is_the_baselines_over_the_techniques():
    df = _study(dq_factor=1.0)
    df["val/word_ppl"], df["test/word_ppl"] = 10.0, 10.0
    df.loc[df["technique"] == "dq", "test/word_ppl"] = 10.1
    df["squeeze.metrics"] = '{"word_ppl": "min"}'
    p = claims.pass_fail(df).set_index("technique")
    assert p.loc["dq", "metric"] == "word_ppl" and p.loc["dq", "fraction"] == pytest.approx(10 / 10.1)
    assert p.loc["dq", "99%"] == "pass" and p.loc["dq", "99.9%"] == "fail"


def test_the_flowchart_picks_the_smallest_eligible_technique_and_cites_its_runs(tmp_path):
    df = _study(dq_factor=0.995)
    t = flowchart.decisions(df, 0.99).set_index(["retrain", "target"])
    assert t.loc[("no", "size"), "pick"] == "dq" and t.loc[("no", "size"), "ratio"] == pytest.approx(0.64)
    assert t.loc[("no", "size"), "status"] == "passes"
    assert t.loc[("no", "size"), "runs"].count(",") == 5                 # the 6 DQ trials behind its interval
    assert t.loc[("no", "energy"), "ratio"] == pytest.approx(0.001)      # without retraining: quantizing alone
    assert t.loc[("yes", "energy"), "ratio"] == pytest.approx(1.001)     # with it: the baseline it needs, too
    assert "pkd" not in t.loc[("no", "size"), "why"]                     # no retraining: no PKD
    worse = flowchart.decisions(_study(dq_factor=0.9), 0.99).set_index(["retrain", "target"])
    assert worse.loc[("no", "size"), "pick"] == "none" and "closest dq at 0.900" in worse.loc[("no", "size"), "why"]
    png = flowchart.draw(flowchart.decisions(df, 0.99), tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
