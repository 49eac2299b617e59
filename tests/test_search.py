"""Recipe search: the front and its hypervolume, MO-ASHA's promotions, Optuna's space, budgets (hand-checked), and
real Ray Tune stages that stop trials early, search two objectives with NSGA-II and keep a budget across a resume."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from squeeze.search import front
from squeeze.search.budget import Meter
from squeeze.search.schedulers import MoAsha

# ---------------------------------------------------------------------------------------------- the front, by hand


def test_hypervolume_of_a_two_objective_front_by_hand():
    # (accuracy max, size min); (0.7, 8) is dominated by (0.8, 5). Region: [0.5, 0.9] x [10, 20] + [0.5, 0.8] x [5, 10]
    pts = [(0.9, 10), (0.8, 5), (0.7, 8)]
    assert front.hypervolume(pts, ["max", "min"], [0.5, 20]) == pytest.approx(0.4 * 10 + 0.3 * 5)
    assert front.pareto_mask(front.costs(pts, ["max", "min"])).tolist() == [True, True, False]
    assert front.hypervolume([(0.4, 1)], ["max", "min"], [0.5, 20]) == 0.0  # does not dominate the reference


def test_hypervolume_in_three_objectives_by_inclusion_exclusion():
    # boxes to the reference (4, 4, 4): 3*2*2 = 12 and 2*3*3 = 18, overlapping in 2*2*2 = 8
    assert front.hypervolume([(1, 2, 2), (2, 1, 1)], ["min"] * 3, [4, 4, 4]) == pytest.approx(22.0)
    rng = np.random.default_rng(0)  # against Monte Carlo on random fronts
    pts = rng.uniform(0, 1, size=(6, 3))
    samples = rng.uniform(0, 1, size=(200_000, 3))
    dominated = (samples[:, None, :] >= pts[None, :, :]).all(axis=2).any(axis=1).mean()
    assert front.hypervolume(pts, ["min"] * 3, [1, 1, 1]) == pytest.approx(dominated, abs=0.01)


def test_fronts_and_the_order_within_a_front():
    x = np.array([[0, 1], [1, 0], [0.5, 0.5], [1, 1]], dtype=float)
    assert [f.tolist() for f in front.fronts(x)] == [[0, 1, 2], [3]]
    # lowest first cost first, then the farthest from those taken: (1, 0) before the middle point
    assert front.rank(x).tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------- MO-ASHA, by hand


def test_mo_asha_promotes_exactly_the_hand_computed_trials():
    stops = []
    s = MoAsha(["val/accuracy", "size/nonzero"], ["max", "min"], epochs=4, grace_period=1, reduction_factor=2,
               on_stop=lambda trial, result, why: stops.append((trial.trial_id, why)))
    assert [m for m, _ in s.rungs] == [2.0, 1.0]  # rungs below the last epoch only
    seen = {}

    def report(tid, acc, size, epoch=1):
        seen[tid] = s.on_trial_result(None, SimpleNamespace(trial_id=tid, config={}),
                                      {"val/accuracy": acc, "size/nonzero": size, "epochs_done": epoch})
        return seen[tid]

    assert report("T1", 0.8, 10) == "CONTINUE"   # first at the rung
    assert report("T2", 0.7, 20) == "STOP"       # dominated by T1: position 1 of 2, not below 2/2
    assert report("T3", 0.9, 30) == "CONTINUE"   # front {T1, T3}, T3 first (best accuracy): position 0 of 3
    assert report("T4", 0.85, 5) == "CONTINUE"   # dominates T1; front {T3, T4}: position 1 of 4 < 2
    assert report("T5", 0.6, 40) == "STOP"       # dominated by all: position 4 of 5
    assert report("T1", 0.82, 10, epoch=2) == "CONTINUE"  # first at the second rung
    assert report("T3", 0.5, 30, epoch=4) == "CONTINUE"   # never stopped at its last epoch
    assert [t for t, _ in stops] == ["T2", "T5"] and "after epoch 1 of 4" in stops[0][1]
    assert s.stopped == {"T2": stops[0][1], "T5": stops[1][1]}


# ---------------------------------------------------------------------------------------------- Optuna's space


def _sweep(**kw):
    from squeeze import config

    doc = {"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60},
           "train": {"epochs": 1, "max_length": 32}, **kw}
    return config.parse({"experiment": "t", "sweeps": [doc]}).sweeps[0]


def test_optuna_space_keeps_ray_bounds_and_points_keep_their_keys():
    from squeeze.points import expand
    from squeeze.search.searchers import distributions, from_point, to_point
    from squeeze.search_space import param_space

    sw = _sweep(search={"algorithm": "tpe"}, search_space={"seed": {"randint": [2, 5]}, "lr": {"loguniform": [1e-4, 1e-2]},
                                                           "batch_size": {"grid_search": [8, 16]}})
    d = distributions(sw, None)
    assert (d["train/seed"].low, d["train/seed"].high) == (2, 4)  # Ray's randint excludes its upper bound
    assert d["train/lr"].log and d["train/batch_size"].choices == (8, 16)
    # a drawn point has the key a grid point of the same values has: a resumed stage finds its run
    grid = expand(param_space(_sweep(search_space={"batch_size": {"grid_search": [8]}, "seed": {"grid_search": [3]},
                                                   "lr": {"grid_search": [1e-3]}})), 1, "x")[0]
    drawn = to_point({"train/seed": 3, "train/lr": 1e-3, "train/batch_size": 8}, list(d))
    assert drawn["key"] == grid["key"]
    assert to_point(from_point(drawn), list(d)) == drawn


def test_a_draw_that_repeats_a_known_point_is_told_its_result_not_run_again():
    from squeeze.search.searchers import OptunaDraws, distributions, to_point

    sw = _sweep(search={"algorithm": "tpe"}, search_space={"seed": {"grid_search": [1, 2]}})
    d = distributions(sw, None)
    draws = OptunaDraws(d, ["val/accuracy"], ["max"], "tpe", 0)
    for seed, acc in ((1, 0.6), (2, 0.7)):
        draws.add_known(to_point({"train/seed": seed}, list(d)), {"val/accuracy": acc, "parity/ok": 1.0})
    assert draws.ask("t1") is None  # both points known: the space is exhausted, nothing runs twice
    assert len(draws.study.trials) > 2


# ---------------------------------------------------------------------------------------------- budgets


def test_budget_meter_counts_trials_hours_and_energy():
    from squeeze.search.spec import Budget

    m = Meter(Budget(trials=3), "sweep 's'")
    m.add_finished(2, 0.0, 0.0)
    assert m.spent() is None
    m.start("a")
    assert "budget of 3 trials spent (3 started)" in m.spent()
    h = Meter(Budget(hours=1.0), "sweep 's'")
    h.add_finished(1, 1.5, 0.0)
    assert "1 trial-hours spent" in h.spent()
    e = Meter(Budget(kwh=1.0), "sweep 's'")
    e.start("a")
    e.end("a", {"energy/total_kwh": float("nan")})
    assert "cannot be kept" in e.spent() and "measured no energy" in e.spent()
    study = Meter(Budget(trials=1), "study")
    stage = Meter(None, "sweep 's'", parent=study)
    stage.start("a")
    assert "study budget of 1 trials spent" in stage.spent()


def test_identity_ignores_the_budget_and_default_search_settings():
    from squeeze.stage import identity

    a = _sweep()
    assert identity(a, "d", None) == identity(_sweep(budget={"trials": 5}), "d", None)
    assert identity(a, "d", None) == identity(_sweep(search={"algorithm": "grid"}), "d", None)
    assert identity(a, "d", None) != identity(_sweep(train={"epochs": 3, "max_length": 32},
                                                     search={"scheduler": "asha"}), "d", None)


# ---------------------------------------------------------------------------------------------- real stages

ASHA = {"experiment": "asha", "max_concurrent_trials": 1, "sweeps": [
    {"name": "senti", "task": "sentiment", "model": {"name": "tiny-bert"},
     "data": {"size": 1500, "split": [0.6, 0.2, 0.2]},
     "train": {"epochs": 3, "batch_size": 16, "max_length": 48, "eval_batch_size": 64},
     "measure": {"latency": False}, "search": {"scheduler": "asha", "grace_period": 1, "reduction_factor": 2},
     # served in this order (one at a time): the first learns (dev 0.87 after one epoch), the others stay at chance
     "search_space": {"lr": {"grid_search": [1.0e-3, 1.0e-5, 3.0e-3, 3.0e-6]}}},
    {"name": "dq", "task": "sentiment", "technique": ["dq"], "model": {"name": "tiny-bert"},
     "data": {"size": 1500, "split": [0.6, 0.2, 0.2]}, "train": {"max_length": 48}, "measure": {"latency": False},
     "source": {"sweep": "senti"}}]}


@pytest.mark.slow
def test_asha_stops_the_worst_trials_and_their_runs_say_so(workdir, ray_session):
    import squeeze
    from squeeze.tracking import mlflow_client

    (workdir / "s.yaml").write_text(yaml.safe_dump(ASHA))
    df = squeeze.study(str(workdir / "s.yaml"))
    senti = df[df["sweep"] == "senti"]
    stopped = senti[senti["status"] == "STOPPED_EARLY"]
    assert len(stopped) == 3 and set(stopped["lr"]) == {1e-5, 3e-3, 3e-6}
    assert all(s.startswith("stopped early by asha after epoch") for s in stopped["stopped_early"])
    assert stopped["test/accuracy"].isna().all() and (stopped["time/train_s"] > 0).all()  # costs kept, no test score
    kept = senti[senti["status"] == "FINISHED"]
    assert kept["lr"].tolist() == [1e-3] and kept["val/accuracy"].iloc[0] > 0.8
    assert df[df["sweep"] == "dq"]["source_run"].tolist() == kept["run_id"].tolist()  # a stopped trial is no source
    client = mlflow_client(f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name("asha").experiment_id
    parent = next(r for r in client.search_runs([exp]) if r.data.tags.get("squeeze.sweep") == "senti"
                  and r.data.tags.get("squeeze.parent") == "1")
    assert parent.data.metrics["trials_stopped_early"] == 3 and parent.data.tags["squeeze.not_run"] == "0"
    # a stopped trial is done: the study again runs nothing
    again = squeeze.study(str(workdir / "s.yaml"))
    assert sorted(again["run_id"]) == sorted(df["run_id"])


MO = {"experiment": "mo", "max_concurrent_trials": 2, "sweeps": [
    {"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 300},
     "train": {"epochs": 1, "batch_size": 16, "max_length": 32, "lr": 1e-3}, "measure": {"latency": False}},
    {"name": "prune", "task": "sentiment", "technique": ["magnitude"], "model": {"name": "tiny-bert"},
     "data": {"size": 300}, "train": {"max_length": 32}, "measure": {"latency": False},
     "source": {"sweep": "base", "select": "best"}, "num_samples": 6, "budget": {"trials": 4},
     "search": {"algorithm": "nsga2", "seed": 1},
     "objectives": [{"metric": "val/accuracy", "mode": "max"}, {"metric": "size/nonzero", "mode": "min"}],
     "search_space": {"magnitude.sparsity": {"uniform": [0.1, 0.9]}}}]}


@pytest.mark.slow
def test_nsga2_front_is_non_dominated_and_a_budget_holds_across_a_resume(workdir, ray_session):
    import squeeze
    from analysis.front import fronts
    from squeeze.tracking import mlflow_client

    mo = copy.deepcopy(MO)
    (workdir / "s.yaml").write_text(yaml.safe_dump(mo))
    df = squeeze.study(str(workdir / "s.yaml"))
    prune = df[df["sweep"] == "prune"]
    assert len(prune) == 4 and (prune["status"] == "FINISHED").all()  # the budget: 4 of 6
    client = mlflow_client(f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name("mo").experiment_id
    parent = next(r for r in client.search_runs([exp]) if r.data.tags.get("squeeze.sweep") == "prune"
                  and r.data.tags.get("squeeze.parent") == "1")
    assert parent.data.tags["squeeze.not_run"] == "2" and "budget of 4 trials spent" in parent.data.tags["squeeze.budget"]
    assert json.loads(parent.data.tags["squeeze.objectives"])[1]["metric"] == "size/nonzero"
    f = fronts("mo")["prune"]
    on = f.table[f.table["on_front"]][["val/accuracy", "size/nonzero"]].to_numpy()
    x = front.costs(on, ["max", "min"])
    assert len(on) and not any(front.dominates(a, b) for a in x for b in x)
    off = f.table[~f.table["on_front"]][["val/accuracy", "size/nonzero"]].to_numpy()
    assert all(any(front.dominates(a, b) for a in x) for b in front.costs(off, ["max", "min"]))
    assert f.hypervolume > 0 and not math.isnan(f.reference[0])
    from analysis import report

    text = (report.build("mo", workdir / "rep") / "report.md").read_text()
    assert "## Front: prune" in text and "Hypervolume" in text and (workdir / "rep" / "front_prune.png").stat().st_size > 5000
    # a larger budget continues the same stage: 2 more trials, none repeated
    mo["sweeps"][1]["budget"] = {"trials": 6}
    (workdir / "s.yaml").write_text(yaml.safe_dump(mo))
    df2 = squeeze.study(str(workdir / "s.yaml"))
    prune2 = df2[df2["sweep"] == "prune"]
    assert len(prune2) == 6 and prune2["trial_id"].nunique() == 6 and set(prune["run_id"]) <= set(prune2["run_id"])


def test_ray_asha_stops_below_the_rung_cutoff_but_never_at_the_last_epoch():
    from squeeze.search.schedulers import Asha

    s = Asha(epochs=3, grace_period=1, reduction_factor=2)
    s.set_search_properties("val/accuracy", "max")
    trials = [SimpleNamespace(trial_id=t, config={}) for t in ("a", "b", "c")]
    for t in trials:
        s.on_trial_add(None, t)

    def report(t, acc, epochs, **extra):
        return s.on_trial_result(None, t, {"val/accuracy": acc, "epochs_done": epochs, **extra})

    assert report(trials[0], 0.9, 1) == "CONTINUE"
    assert report(trials[1], 0.5, 1) == "STOP"  # below the median of the rung (Ray's cutoff at 1 - 1/eta)
    assert report(trials[0], 0.2, 3) == "CONTINUE"  # its last epoch: only evaluation and saving are left
    assert report(trials[2], 0.1, 1, **{"parity/ok": 1.0}) == "CONTINUE"  # a final result is never a stop
    assert list(s.stopped) == ["b"] and "asha after epoch 1 of 3" in s.stopped["b"]
