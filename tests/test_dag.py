"""A study's stages as a DAG: each stage waits for exactly its sources, independent stages run at once, a failed
stage stops only its dependents, and Ctrl-C stops every running stage so that the next `squeeze study` finishes
exactly what was left (the multi-node run is in test_cluster.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from helpers import start_cli, study_runs, wait_runs

from squeeze.driver import dag


def _stages(*pairs):
    return [SimpleNamespace(name=n, source=SimpleNamespace(sweep=src) if src else None) for n, src in pairs]


def test_independent_stages_run_at_once_and_a_dependent_waits_for_its_source():
    both_running = threading.Barrier(2, timeout=10)  # a and b can only pass it together
    log = []

    def run(s):
        log.append(("start", s.name, time.monotonic()))
        if s.name in ("a", "b"):
            both_running.wait()  # sequentially this would time out: a waits for b forever
            time.sleep(0.2 if s.name == "a" else 0.6)
        log.append(("end", s.name, time.monotonic()))
        return s.name

    out = dag.run(_stages(("a", None), ("b", None), ("from_a", "a")), run)
    assert out == {"a": "a", "b": "b", "from_a": "from_a"}
    t = {(kind, name): when for kind, name, when in log}
    assert t[("start", "from_a")] >= t[("end", "a")]   # waited for its source ...
    assert t[("start", "from_a")] < t[("end", "b")]    # ... and for nothing else


def test_sequential_runs_in_file_order_one_at_a_time():
    log = []
    out = dag.run(_stages(("a", None), ("b", None), ("c", "a")), lambda s: log.append(s.name) or s.name, sequential=True)
    assert log == ["a", "b", "c"] and set(out) == {"a", "b", "c"}


@pytest.mark.parametrize("sequential", [False, True])
def test_a_failed_stage_skips_its_dependents_and_the_others_finish(sequential):
    ran = []

    def run(s):
        ran.append(s.name)
        if s.name == "a":
            raise RuntimeError("source has no finished trial")
        return s.name

    out = dag.run(_stages(("a", None), ("from_a", "a"), ("from_from_a", "from_a"), ("b", None)), run,
                  sequential=sequential)
    assert sorted(ran) == ["a", "b"] and out["b"] == "b"
    assert isinstance(out["a"], RuntimeError)
    assert "its source a failed" in str(out["from_a"]) and "its source from_a failed" in str(out["from_from_a"])


def test_a_source_outside_the_run_is_no_dependency():
    """`--only dq`: the source stage is not run by this command, it must be complete already (checked elsewhere)."""
    assert dag.dependencies(_stages(("dq", "base"))) == {"dq": set()}


def test_every_tune_loop_of_a_stage_thread_watches_the_drivers_stop_event():
    import importlib

    dag.share_interrupt()
    tune_module = importlib.import_module("ray.tune.tune")
    seen = {}
    t = threading.Thread(target=lambda: seen.update(event=tune_module._setup_signal_catching()))
    t.start()
    t.join()
    assert seen["event"] is dag.STOP


@pytest.mark.slow
def test_ctrl_c_stops_every_running_stage_and_the_next_study_finishes_them(workdir):
    import ray
    import yaml

    ray.shutdown()
    sweep = {"task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 80},
             "train": {"epochs": 2, "batch_size": 16, "max_length": 32}, "measure": {"latency": False},
             "technique": ["faulty:FailOnce"], "params": {"faulty:FailOnce": {"mode": "none", "sleep_s": 0.4}},
             "search_space": {"seed": {"grid_search": [0, 1]}}}
    doc = {"experiment": "dagintr", "max_concurrent_trials": 1,
           "sweeps": [{"name": "a", **sweep}, {"name": "b", **sweep}]}
    f = workdir / "dagintr.yaml"
    f.write_text(yaml.safe_dump(doc))
    proc = start_cli(workdir, "study", str(f))
    wait_runs(workdir, "dagintr", lambda p, c: {r.data.tags["squeeze.sweep"] for r in c if r.info.status == "RUNNING"} == {"a", "b"})
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=180) == 130
    _, parents, children = study_runs(workdir, "dagintr")
    assert sorted(p.info.status for p in parents) == ["KILLED", "KILLED"]  # neither stage counts as complete
    assert not [r for r in children if r.info.status == "RUNNING"]
    again = subprocess.run([sys.executable, "-m", "squeeze.cli", "study", str(f)], cwd=workdir, capture_output=True,
                           text=True, timeout=500)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    client, parents, children = study_runs(workdir, "dagintr")
    assert sorted(p.info.status for p in parents) == ["FINISHED", "FINISHED"]
    for name in ("a", "b"):  # every trial ran exactly once, to its last epoch, on one MLflow run
        runs = [r for r in children if r.data.tags["squeeze.sweep"] == name]
        assert len(runs) == 2 and len({r.data.tags["squeeze.trial_id"] for r in runs}) == 2
        for r in runs:
            assert r.info.status == "FINISHED"
            assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "train/loss")) == [0, 1]


def test_a_local_ray_is_no_autoscaling_cluster_and_refuses_trials_it_cannot_place(ray_session, capsys):
    """Every Ray publishes an autoscaler status; only one with node types to launch may take trials larger than its
    nodes (test_launcher covers that side). A local Ray refuses them before any trial, naming the field."""
    from squeeze import config
    from squeeze.driver import sweep
    from squeeze.config import ConfigError

    cfg = config.parse({"experiment": "t", "sweeps": [{"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"},
                                                        "resources": {"cpu": 64}}]})
    assert not sweep.has_autoscaler()
    with pytest.raises(ConfigError, match=r"sweeps.0.resources.cpu: a trial asks for 64"):
        sweep.check_resources(cfg)
    assert "autoscaling cluster" not in capsys.readouterr().err


def test_a_sigterm_whose_keyboardinterrupt_python_dropped_still_stops_the_study():
    """The CLI's SIGTERM handler raises KeyboardInterrupt, which Python drops when it lands in a finalizer or a GC
    callback (seen in CI: "Exception ignored in: <function _collection_gced>" and the study ran on, exit 0); the flag
    the handler sets first is checked by the stage loop (and by each model of a latency pass)."""
    from squeeze.driver.stage import Interrupted

    def run_stage(s):
        while not dag.STOP.is_set():
            time.sleep(0.05)
        raise Interrupted("stopped")

    timer = threading.Timer(0.3, dag.SIGNALLED.set)
    timer.start()
    try:
        with pytest.raises(Interrupted):
            dag.run([SimpleNamespace(name="a", source=None)], run_stage)
        assert dag.STOP.is_set()
        with pytest.raises(KeyboardInterrupt):
            dag.check_signalled()
    finally:
        timer.cancel()
        dag.SIGNALLED.clear()
        dag.STOP.clear()
