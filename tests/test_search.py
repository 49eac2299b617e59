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

from squeeze.driver.search import front
from squeeze.driver.search.budget import Meter
from squeeze.driver.search.schedulers import MoAsha

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
    from squeeze.driver.points import expand
    from squeeze.driver.search.searchers import distributions, from_point, to_point
    from squeeze.driver.search_space import param_space

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
    from squeeze.driver.search.searchers import OptunaDraws, distributions, to_point

    sw = _sweep(search={"algorithm": "tpe"}, search_space={"seed": {"grid_search": [1, 2]}})
    d = distributions(sw, None)
    draws = OptunaDraws(d, ["val/accuracy"], ["max"], "tpe", 0)
    for seed, acc in ((1, 0.6), (2, 0.7)):
        draws.add_known(to_point({"train/seed": seed}, list(d)), {"val/accuracy": acc, "parity/ok": 1.0})
    assert draws.ask("t1") is None  # both points known: the space is exhausted, nothing runs twice
    assert len(draws.study.trials) > 2


# ---------------------------------------------------------------------------------------------- the technique searched


def _searching(space, **kw):
    """A stage from a baseline that searches its technique; the baseline is parsed with it (the source rules)."""
    from squeeze import config

    base = {"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60},
            "train": {"epochs": 1, "max_length": 32}}
    doc = {"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60},
           "train": {"max_length": 32, **kw.pop("train", {})}, "source": {"sweep": "base"}, "search_space": space, **kw}
    return config.parse({"experiment": "t", "sweeps": [base, doc]}).sweeps[1]


def test_a_searched_technique_expands_each_alternative_with_only_its_own_knobs():
    from squeeze.driver.search import alternatives
    from squeeze.driver.search_space import resolve_trial
    from squeeze.driver.sweep import stage_points

    sw = _searching({"technique": {"grid_search": ["dq", "rtn", ["sparsegpt", "gptq"]]},
                     "gptq.bits": {"grid_search": [4, 8]}, "sparsegpt.sparsity": {"grid_search": [0.3, 0.5]},
                     "rtn.group_size": {"grid_search": [32, 64]}})
    assert sw.technique == ["dq", "rtn", "sparsegpt", "gptq"] and sw.train.epochs == 0
    assert alternatives.label(sw) == "dq | rtn | gptq+sparsegpt"
    pts = stage_points(sw, "ident", None)
    # 1 (dq: nothing searched) + 2 (rtn: its group size) + 4 (bits x sparsity): not the 1 x 2 x 2 x 2 x 3 product
    by = {}
    for p in pts:
        by.setdefault("+".join(p["technique"]), []).append(p)
    assert {k: len(v) for k, v in by.items()} == {"dq": 1, "rtn": 2, "sparsegpt+gptq": 4}
    assert by["dq"][0]["params"] == {} and all(set(p["params"]) == {"rtn"} for p in by["rtn"])
    assert {(p["params"]["gptq"]["bits"], p["params"]["sparsegpt"]["sparsity"]) for p in by["sparsegpt+gptq"]} == \
        {(4, 0.3), (4, 0.5), (8, 0.3), (8, 0.5)}
    assert len({p["key"] for p in pts}) == 7 and stage_points(sw, "ident", None) == pts  # the same on every driver
    trial = resolve_trial(sw, by["sparsegpt+gptq"][0])
    assert trial.technique == ["sparsegpt", "gptq"] and set(trial.params) == {"sparsegpt", "gptq"}
    assert resolve_trial(sw, by["dq"][0]).technique == ["dq"] and resolve_trial(sw, by["dq"][0]).params == {}


def test_a_training_field_applies_only_to_the_alternatives_that_train():
    from squeeze.driver.search_space import resolve_trial
    from squeeze.driver.sweep import stage_points

    sw = _searching({"technique": {"grid_search": ["dq", "pkd"]}, "lr": {"grid_search": [1e-4, 3e-4]},
                     "pkd.alpha": {"grid_search": [0.2, 0.8]}}, train={"epochs": 2})
    pts = stage_points(sw, "ident", None)
    dq = [p for p in pts if p["technique"] == ["dq"]]
    pkd = [p for p in pts if p["technique"] == ["pkd"]]
    assert len(dq) == 1 and dq[0]["train"] == {}  # two learning rates would quantize the same model twice
    assert len(pkd) == 4 and {p["train"]["lr"] for p in pkd} == {1e-4, 3e-4}
    assert resolve_trial(sw, dq[0]).train.epochs == 0 and resolve_trial(sw, pkd[0]).train.epochs == 2


def test_optuna_draws_the_technique_first_and_then_only_its_knobs():
    from squeeze.registry import technique_label
    from squeeze.driver.search import alternatives
    from squeeze.driver.search.searchers import OptunaDraws, distributions

    sw = _searching({"technique": {"choice": ["dq", "gptq", ["sparsegpt", "gptq"]]},
                     "gptq.bits": {"choice": [4, 8]}, "sparsegpt.sparsity": {"uniform": [0.3, 0.7]},
                     "dq.backend": {"choice": ["torch", "onnxruntime"]}},
                    search={"algorithm": "tpe", "seed": 3}, num_samples=12)
    space = distributions(sw, ["r1"])
    recipes = {technique_label(a): a for a in alternatives.alternatives(sw)}
    draws = OptunaDraws(space, ["val/accuracy"], ["max"], "tpe", 3, recipes=recipes)
    want = {"dq": {"dq"}, "gptq": {"gptq"}, "gptq+sparsegpt": {"gptq", "sparsegpt"}}
    seen = []
    for i in range(12):
        p = draws.ask(str(i))
        label = technique_label(p["technique"])
        assert set(p["params"]) == want[label] and p["train"] == {} and p["source_run"] == "r1", p
        draws.tell(str(i), p["key"], {"val/accuracy": {"dq": 0.8, "gptq": 0.7}.get(label, 0.6), "parity/ok": 1.0}, False)
        seen.append(p)
    assert len({technique_label(p["technique"]) for p in seen}) == 3 and len({p["key"] for p in seen}) == 12
    # a resumed search learns every finished point of every alternative, and draws none of them again
    again = OptunaDraws(space, ["val/accuracy"], ["max"], "tpe", 3, recipes=recipes)
    for p in seen:
        again.add_known(p, {"val/accuracy": 0.5, "parity/ok": 1.0})
    assert len(again.study.trials) == 12 and set(again.known) == {p["key"] for p in seen}
    assert again.ask("next")["key"] not in again.known


def test_tpe_takes_several_objectives_as_motpe_and_starts_from_a_quarter_of_the_trials():
    from squeeze.driver.search.build import population
    from squeeze.driver.search.searchers import OptunaDraws, distributions

    sw = _sweep(search={"algorithm": "tpe"}, search_space={"lr": {"loguniform": [1e-4, 1e-2]}},
                objectives=[{"metric": "val/accuracy", "mode": "max"}, {"metric": "size/params", "mode": "min"}])
    draws = OptunaDraws(distributions(sw, None), ["val/accuracy", "size/params"], ["max", "min"], "tpe", 0,
                        population=population(16))
    assert draws.study._is_multi_objective() and draws.study.sampler._n_startup_trials == 4
    for i in range(8):  # past the random start: MOTPE proposes from the told results
        p = draws.ask(str(i))
        draws.tell(str(i), p["key"], {"val/accuracy": p["train"]["lr"], "size/params": 1.0, "parity/ok": 1.0}, False)
    assert len(draws.study.best_trials) >= 1 and all(len(t.values) == 2 for t in draws.study.trials)


# ---------------------------------------------------------------------------------------------- budgets


def test_budget_meter_counts_trials_hours_and_energy():
    from squeeze.driver.search.spec import Budget

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
    from squeeze.driver.stage import identity

    a = _sweep()
    assert identity(a, "d", None) == identity(_sweep(budget={"trials": 5}), "d", None)
    assert identity(a, "d", None) == identity(_sweep(search={"algorithm": "grid"}), "d", None)
    assert identity(a, "d", None) != identity(_sweep(train={"epochs": 3, "max_length": 32},
                                                     search={"scheduler": "asha"}), "d", None)


# ---------------------------------------------------------------------------------------------- real stages

def _study(workdir, doc):
    """``squeeze.study`` of ``doc`` written as the sweep file a user would run."""
    import squeeze

    (workdir / "s.yaml").write_text(yaml.safe_dump(doc))
    return squeeze.study(str(workdir / "s.yaml"))


def _parent(workdir, experiment: str, sweep: str):
    """The parent MLflow run of a stage, and the client that read it."""
    from squeeze.tracking import mlflow_client

    client = mlflow_client(f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name(experiment).experiment_id
    return client, next(r for r in client.search_runs([exp]) if r.data.tags.get("squeeze.sweep") == sweep
                        and r.data.tags.get("squeeze.parent") == "1")


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

    df = _study(workdir, ASHA)
    senti = df[df["sweep"] == "senti"]
    stopped = senti[senti["status"] == "STOPPED_EARLY"]
    assert len(stopped) == 3 and set(stopped["lr"]) == {1e-5, 3e-3, 3e-6}
    assert all(s.startswith("stopped early by asha after epoch") for s in stopped["stopped_early"])
    assert stopped["test/accuracy"].isna().all() and (stopped["time/train_s"] > 0).all()  # costs kept, no test score
    kept = senti[senti["status"] == "FINISHED"]
    assert kept["lr"].tolist() == [1e-3] and kept["val/accuracy"].iloc[0] > 0.8
    assert df[df["sweep"] == "dq"]["source_run"].tolist() == kept["run_id"].tolist()  # a stopped trial is no source
    client, parent = _parent(workdir, "asha", "senti")
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
    from analysis.front import fronts

    mo = copy.deepcopy(MO)
    df = _study(workdir, mo)
    prune = df[df["sweep"] == "prune"]
    assert len(prune) == 4 and (prune["status"] == "FINISHED").all()  # the budget: 4 of 6
    client, parent = _parent(workdir, "mo", "prune")
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
    df2 = _study(workdir, mo)
    prune2 = df2[df2["sweep"] == "prune"]
    assert len(prune2) == 6 and prune2["trial_id"].nunique() == 6 and set(prune["run_id"]) <= set(prune2["run_id"])


ACROSS = {"experiment": "across", "max_concurrent_trials": 2, "sweeps": [
    {"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 300},
     "train": {"epochs": 1, "batch_size": 16, "max_length": 32, "lr": 1e-3}, "measure": {"latency": False}},
    {"name": "menu", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 300},
     "train": {"max_length": 32}, "measure": {"latency": False}, "source": {"sweep": "base", "select": "best"},
     "objectives": [{"metric": "val/accuracy", "mode": "max"}, {"metric": "size/disk_mb", "mode": "min"}],
     "params": {"rtn": {"group_size": 32}, "gptq": {"group_size": 32}, "magnitude": {"sparsity": 0.5}},
     "search_space": {"technique": {"grid_search": ["dq", "rtn", ["magnitude", "gptq"]]},
                      "gptq.bits": {"grid_search": [4, 8]}}}]}


@pytest.mark.slow
def test_one_stage_searches_dq_weight_only_and_pruning_from_one_baseline(workdir, ray_session):
    import squeeze
    from analysis.front import fronts

    df = _study(workdir, ACROSS)
    menu = df[df["sweep"] == "menu"]
    base = df[df["sweep"] == "base"]
    assert (menu["status"] == "FINISHED").all() and len(menu) == 4  # dq, rtn, and the composition at 4 and 8 bits
    assert sorted(menu["technique"]) == ["dq", "gptq+magnitude", "gptq+magnitude", "rtn"]
    assert set(menu["source_run"]) == set(base["run_id"])  # every recipe from the one baseline
    client, parent = _parent(workdir, "across", "menu")
    for _, row in menu.iterrows():  # each trial logs its own recipe's knobs and no other's
        params = client.get_run(row["run_id"]).data.params
        assert ("params.gptq.bits" in params) == ("gptq" in row["technique"])
        assert ("params.dq.backend" in params) == (row["technique"] == "dq") and "train.lr" not in params
    comp = menu[menu["technique"] == "gptq+magnitude"].sort_values("run_id")
    bits = {client.get_run(r).data.params["params.gptq.bits"] for r in comp["run_id"]}
    assert bits == {"4", "8"} and comp["size/disk_mb"].nunique() == 2  # 4 and 8 bits store different sizes
    f = fronts("across")["menu"]
    assert len(f.table) == 4 and f.table["on_front"].any()
    assert parent.data.tags["technique"] == "dq | rtn | gptq+magnitude"
    again = squeeze.study(str(workdir / "s.yaml"))  # complete: nothing runs twice
    assert sorted(again["run_id"]) == sorted(df["run_id"])


def test_ray_asha_stops_below_the_rung_cutoff_but_never_at_the_last_epoch():
    from squeeze.driver.search.schedulers import Asha

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
