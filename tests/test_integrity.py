"""A study's record is exactly what ran: interrupts, stale stages, a stage run twice at once, corrupt caches.

Each test drives the real command line (in a subprocess where it must be interrupted) against a real MLflow store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml
from helpers import kill_driver, start_cli, study_runs, wait_runs

from squeeze import cli

pytestmark = pytest.mark.slow


def _file(workdir, name, *, seeds=(0, 1, 2, 3), sleep=0.0, dq=False, lrs=(1e-3,)):
    base = {"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 80},
            "train": {"epochs": 2, "batch_size": 16, "max_length": 32}, "measure": {"latency": False},
            "technique": ["faulty:FailOnce"], "params": {"faulty:FailOnce": {"mode": "none", "sleep_s": sleep}},
            "search_space": {"seed": {"grid_search": list(seeds)}, "lr": {"grid_search": list(lrs)}}}
    sweeps = [base]
    if dq:
        sweeps.append({"name": "dq", "task": "sentiment", "technique": ["dq"], "model": {"name": "tiny-bert"},
                       "data": {"size": 80}, "train": {"max_length": 32}, "measure": {"latency": False},
                       "source": {"sweep": "base", "select": "all"}})
    doc = {"experiment": name, "max_concurrent_trials": 1, "sweeps": sweeps}
    f = workdir / f"{name}.yaml"
    f.write_text(yaml.safe_dump(doc))
    return str(f)


def test_ctrl_c_mid_stage_is_no_completion_and_study_finishes_exactly_the_rest(workdir):
    import ray

    ray.shutdown()
    f = _file(workdir, "intr", sleep=0.3)
    proc = start_cli(workdir, "study", f)
    _, before = wait_runs(workdir, "intr", lambda p, c: any(r.info.status == "FINISHED" for r in c)
                      and any(r.info.status == "RUNNING" for r in c))
    done_before = {r.data.tags["squeeze.trial_id"]: r.info.end_time for r in before if r.info.status == "FINISHED"}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130  # interrupted: non-zero, never "complete"
    _, parents, children = study_runs(workdir, "intr")
    assert [p.info.status for p in parents] == ["KILLED"] and "interrupted" in parents[0].data.tags["squeeze.stopped"]
    assert not [r for r in children if r.info.status == "RUNNING"]
    again = subprocess.run([sys.executable, "-m", "squeeze.cli", "study", f], cwd=workdir, capture_output=True,
                           text=True, timeout=400)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    client, parents, children = study_runs(workdir, "intr")
    ids = [r.data.tags["squeeze.trial_id"] for r in children]
    assert len(ids) == 4 and len(set(ids)) == 4  # one run per trial: the unfinished ones continued theirs
    assert all(r.info.status == "FINISHED" for r in children) and [p.info.status for p in parents] == ["FINISHED"]
    for r in children:
        if r.data.tags["squeeze.trial_id"] in done_before:  # finished before Ctrl-C: not run again
            assert r.info.end_time == done_before[r.data.tags["squeeze.trial_id"]]
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "train/loss")) == [0, 1]


def test_a_grown_baseline_grid_reruns_the_stages_built_on_it(workdir, ray_session):
    f = _file(workdir, "grow", seeds=(0,), dq=True)
    assert cli.main(["study", f]) == 0
    assert cli.main(["study", f]) == 0  # unchanged: both stages complete, skipped
    _, parents, _ = study_runs(workdir, "grow")
    assert len(parents) == 2
    assert cli.main(["study", f, "sweeps.base.search_space.lr={grid_search: [1.0e-3, 3.0e-4]}"]) == 0
    _, parents, children = study_runs(workdir, "grow")
    assert sorted(p.data.tags["squeeze.sweep"] for p in parents) == ["base", "base", "dq", "dq"]  # dq ran again
    from analysis.runs import load_runs

    df = load_runs("grow", f"sqlite:///{workdir / 'mlflow.db'}")
    assert (df["sweep"] == "dq").sum() == 2 and not df["stale"].any()  # one DQ trial per current baseline trial
    current_base = set(df.loc[df["sweep"] == "base", "run_id"])
    assert set(df.loc[df["sweep"] == "dq", "source_run"]) == current_base


def test_a_stage_run_twice_at_once_is_refused(workdir, capsys):
    import ray

    ray.shutdown()
    f = _file(workdir, "twice", seeds=(0, 1), sleep=0.5)
    proc = start_cli(workdir, "study", f)
    try:
        wait_runs(workdir, "twice", lambda p, c: any(r.info.status == "RUNNING" for r in c))
        assert cli.main(["study", f]) == 2
        err = capsys.readouterr().err
        assert f"stage 'base' is being run by pid {proc.pid}" in err
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)


def test_a_driver_killed_without_a_word_is_resumed_by_a_plain_study(workdir):
    """SIGKILL leaves the parent and a trial RUNNING (zombies); the next `squeeze study` closes them and resumes."""
    import ray

    ray.shutdown()
    f = _file(workdir, "zombie", seeds=(0, 1, 2), sleep=0.3)
    proc = subprocess.Popen([sys.executable, "-m", "squeeze.cli", "study", f], cwd=workdir, env=dict(os.environ),
                            stdout=open(workdir / "first.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    _, before = wait_runs(workdir, "zombie", lambda p, c: any(r.info.status == "FINISHED" for r in c)
                          and any(r.info.status == "RUNNING" for r in c))
    kill_driver(proc)
    _, _, after_kill = study_runs(workdir, "zombie")  # what MLflow holds as finished when the driver died
    done_before = {r.data.tags["squeeze.trial_id"]: r.info.end_time for r in after_kill if r.info.status == "FINISHED"}
    done = subprocess.run([sys.executable, "-m", "squeeze.cli", "study", f], cwd=workdir, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    _, parents, children = study_runs(workdir, "zombie")
    assert len(children) == 3 and len({r.data.tags["squeeze.trial_id"] for r in children}) == 3
    assert all(r.info.status == "FINISHED" for r in children) and [p.info.status for p in parents] == ["FINISHED"]
    ends = {r.data.tags["squeeze.trial_id"]: r.info.end_time for r in children}
    assert done_before and all(ends[k] == t for k, t in done_before.items())  # finished before the kill: not recomputed


def test_a_corrupt_downloaded_model_is_downloaded_again(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    from squeeze import tracking

    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "model.safetensors").write_bytes(os.urandom(4096))
    exp = tracking.ensure_experiment(mlflow_server, "dl")
    run = MlflowClient(tracking_uri=mlflow_server).create_run(exp)
    MlflowClient(tracking_uri=mlflow_server).log_artifacts(run.info.run_id, str(src), "model")
    cache = tmp_path / "cache"
    got = tracking.download_model(mlflow_server, run.info.run_id, cache)
    assert (tmp_path / "cache" / "models") in __import__("pathlib").Path(got).parents
    (__import__("pathlib").Path(got) / "model.safetensors").write_bytes(b"trunc")  # a download cut short
    again = tracking.download_model(mlflow_server, run.info.run_id, cache)
    assert (__import__("pathlib").Path(again) / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
