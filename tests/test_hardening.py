"""Hardening: nothing runs from the storage folder, every signal ends the same way, only what failed runs again,
and the private Ray listens on loopback only.

The studies are driven through the real command line (a subprocess where a signal must reach it) against a real
MLflow store and a real local Ray; the assertions read MLflow's recorded states, never wall-clock order.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from helpers import start_cli, study_runs, wait_runs

from squeeze import cli

pytestmark = pytest.mark.slow


def _file(workdir, name, *, seeds=(0, 1), epochs=2, fail=None, sleep=0.0, latency=None, concurrent=1, **extra):
    params = {"mode": "none", "sleep_s": sleep, "steps_per_epoch": 3}
    params.update(fail or {})
    sweep = {"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 80},
             "train": {"epochs": epochs, "batch_size": 16, "max_length": 32, "lr": 1e-3},
             "measure": latency or {"latency": False}, "technique": ["faulty:FailOnce"],
             "params": {"faulty:FailOnce": params}, "search_space": {"seed": {"grid_search": list(seeds)}}, **extra}
    doc = {"experiment": name, "max_concurrent_trials": concurrent, "sweeps": [sweep]}
    f = workdir / f"{name}.yaml"
    f.write_text(yaml.safe_dump(doc))
    return str(f)


def _study(workdir, *args, timeout=400):
    return subprocess.run([sys.executable, "-m", "squeeze.cli", "study", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=timeout)


def _finished(children):
    return {r.data.tags["squeeze.trial_id"]: r for r in children if r.info.status == "FINISHED"}


class _Payload:
    """What an attacker plants: unpickling it creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(folder, marker):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tuner.pkl", "trainable.pkl", "searcher-state-2026.pkl"):
        (folder / name).write_bytes(pickle.dumps(_Payload(str(marker))))
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))


def test_a_planted_tuner_pkl_runs_nothing_and_a_changed_checkpoint_is_refused(workdir, ray_session):
    marker, payload = workdir / "failed-once", workdir / "payload-ran"
    f = _file(workdir, "plant", seeds=(0,), epochs=3, fail={"mode": "raise", "at_epoch": 2, "marker": str(marker)})
    assert cli.main(["study", f]) == 1  # the trial raised in its last epoch: FAILED, its epoch-2 checkpoint kept
    stage = next((workdir / "ray_results").glob("plant-base-*"))
    _plant(stage, payload)
    _plant(stage / "tune-20260101-000000-1", payload)  # where a Tune run of this stage would keep its state
    ckpt = sorted((stage / "points").glob("*/epoch-*"))[-1]  # the one its run records
    original = (ckpt / "state.json").read_text()
    (ckpt / "state.json").write_text(original + " ")
    assert cli.main(["study", f, "--retry-failed"]) == 2  # a checkpoint squeeze did not write: refused, nothing ran
    assert not payload.exists()
    _, _, children = study_runs(workdir, "plant")
    assert [r.info.status for r in children] == ["FAILED"]
    (ckpt / "state.json").write_text(original)
    assert cli.main(["study", f, "--retry-failed"]) == 0  # resumed from the checkpoint it wrote, never from Tune's files
    assert not payload.exists()
    client, parents, children = study_runs(workdir, "plant")
    assert [r.info.status for r in children] == ["FINISHED"] and [p.info.status for p in parents] == ["FINISHED"]
    steps = sorted(m.step for m in client.get_metric_history(children[0].info.run_id, "train/loss"))
    assert steps == [0, 1, 2]  # epochs 0 and 1 came from the checkpoint, each logged once


def test_a_nan_trial_is_reported_once_not_rerun_and_retry_failed_runs_only_it(workdir, ray_session, capsys):
    f = _file(workdir, "nan2", seeds=(0, 1), fail={"mode": "nan", "at_epoch": 1, "only_seed": 1})
    assert cli.main(["study", f]) == 1
    _, _, children = study_runs(workdir, "nan2")
    done = _finished(children)
    assert len(done) == 1 and len(children) == 2
    capsys.readouterr()
    assert cli.main(["study", f]) == 1  # still one failed trial: said, not recomputed
    err = capsys.readouterr().err
    assert "failed before (" in err and "became nan in epoch 1" in err and "--retry-failed" in err
    _, parents, again = study_runs(workdir, "nan2")
    assert len(again) == 2 and len(parents) == 1  # the same parent continued, no new trial run
    assert {k: r.info.end_time for k, r in _finished(again).items()} == {k: r.info.end_time for k, r in done.items()}
    assert cli.main(["study", f, "--retry-failed"]) == 1  # it fails again, deterministically; the good one is not rerun
    _, parents, again = study_runs(workdir, "nan2")
    assert len(again) == 2 and len(_finished(again)) == 1 and len(parents) == 1
    assert {k: r.info.end_time for k, r in _finished(again).items()} == {k: r.info.end_time for k, r in done.items()}


def test_sigterm_mid_trial_exits_130_with_killed_runs_and_the_next_study_finishes_exactly_those(workdir):
    import ray

    ray.shutdown()
    f = _file(workdir, "term", seeds=(0, 1, 2), sleep=0.3)
    proc = start_cli(workdir, "study", f)
    _, before = wait_runs(workdir, "term", lambda p, c: any(r.info.status == "FINISHED" for r in c)
                          and any(r.info.status == "RUNNING" for r in c))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, (workdir / "0.log").read_text()[-3000:]
    _, parents, children = study_runs(workdir, "term")
    assert [p.info.status for p in parents] == ["KILLED"] and "interrupted" in parents[0].data.tags["squeeze.stopped"]
    killed = [r for r in children if r.info.status == "KILLED"]
    assert killed and all("interrupted" in r.data.tags["squeeze.error"] for r in killed)
    assert not [r for r in children if r.info.status == "RUNNING"]
    finished = {k: r.info.end_time for k, r in _finished(children).items()}
    done = _study(workdir, f)
    assert done.returncode == 0, done.stderr[-3000:]
    _, parents, children = study_runs(workdir, "term")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 3
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(_finished(children)[k].info.end_time == t for k, t in finished.items())  # not recomputed


def test_sigterm_stops_a_study_started_in_the_background_with_sigint_ignored(workdir):
    """``nohup squeeze study ... &`` starts squeeze with SIGINT ignored: SIGTERM must still stop it, as it does in
    the foreground (it was swallowed: the latency pass of a real study ran on for minutes after it)."""
    import ray

    ray.shutdown()
    f = _file(workdir, "bg", seeds=(0, 1), sleep=0.3)
    proc = start_cli(workdir, "study", f, ignore_sigint=True)
    wait_runs(workdir, "bg", lambda p, c: any(r.info.status == "RUNNING" for r in c))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, (workdir / "0.log").read_text()[-3000:]
    _, parents, children = study_runs(workdir, "bg")
    assert [p.info.status for p in parents] == ["KILLED"] and not [r for r in children if r.info.status == "RUNNING"]


def test_sigterm_under_tpe_and_asha_then_the_next_study_runs_each_trial_once(workdir):
    """An adaptive search with a scheduler: the interrupted trial's point runs again (from its run's point tag),
    finished and stopped trials are not recomputed, and the stage ends with exactly num_samples distinct trials."""
    import ray

    ray.shutdown()
    f = _file(workdir, "tpe", epochs=3, sleep=0.3, num_samples=3, search={"algorithm": "tpe", "scheduler": "asha",
              "grace_period": 1, "reduction_factor": 2}, search_space={"seed": {"randint": [0, 1000]}})
    proc = start_cli(workdir, "study", f)
    wait_runs(workdir, "tpe", lambda p, c: any(r.info.status == "FINISHED" for r in c)
              and any(r.info.status == "RUNNING" for r in c))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, (workdir / "0.log").read_text()[-3000:]
    _, _, children = study_runs(workdir, "tpe")
    killed = {r.data.tags["squeeze.trial_id"] for r in children if r.info.status == "KILLED"}
    finished = {k: r.info.end_time for k, r in _finished(children).items()}
    assert killed and finished
    done = _study(workdir, f)
    assert done.returncode == 0, done.stderr[-3000:]
    _, parents, children = study_runs(workdir, "tpe")
    keys = [r.data.tags["squeeze.trial_id"] for r in children]
    assert parents[0].info.status == "FINISHED" and len(keys) == len(set(keys)) == 3
    assert all(r.info.status == "FINISHED" for r in children) and killed <= set(keys)
    assert all(_finished(children)[k].info.end_time == t for k, t in finished.items())  # not recomputed


def test_sigterm_during_the_latency_pass_exits_130_and_the_next_study_only_measures(workdir):
    import ray

    ray.shutdown()
    f = _file(workdir, "lat", seeds=(0, 1), epochs=1,
              latency={"latency": True, "latency_repeats": 400, "latency_examples": 16})
    proc = start_cli(workdir, "study", f)
    deadline = time.time() + 300
    log = workdir / "0.log"
    while time.time() < deadline and "latency pass: model 1 of 2" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.5)
    assert "latency pass: model 1 of 2" in log.read_text(), log.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    _, parents, children = study_runs(workdir, "lat")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert parents[0].data.tags["squeeze.stopped"] == "interrupted during its latency pass"
    assert [r.info.status for r in children] == ["FINISHED", "FINISHED"]  # the trials' results are kept
    ended = {r.info.run_id: r.info.end_time for r in children}
    done = _study(workdir, f)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 of 2 trials finished before, 0 to run" in done.stderr
    _, parents, children = study_runs(workdir, "lat")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert {r.info.run_id: r.info.end_time for r in children} == ended  # no trial ran again
    assert all("latency/cpu_ms_per_example" in r.data.metrics for r in children)


def _trial_workers(pid):
    return [p for p in psutil.Process(pid).children(recursive=True)
            if any("ImplicitFunc" in part for part in (p.cmdline() or [])) or "ImplicitFunc" in p.name()]


def test_a_killed_trial_worker_makes_the_next_study_run_only_that_trial(workdir):
    import ray

    ray.shutdown()
    f = _file(workdir, "lost", seeds=(0, 1, 2), sleep=0.3)
    proc = start_cli(workdir, "study", f)
    wait_runs(workdir, "lost", lambda p, c: any(r.info.status == "FINISHED" for r in c)
              and any(r.info.status == "RUNNING" for r in c))
    workers = _trial_workers(proc.pid)
    assert workers, [p.cmdline() for p in psutil.Process(proc.pid).children(recursive=True)]
    for w in workers:
        w.kill()
    assert proc.wait(timeout=300) == 1, (workdir / "0.log").read_text()[-3000:]  # a trial failed; the others finished
    _, parents, children = study_runs(workdir, "lost")
    lost = [r for r in children if r.info.status == "FAILED"]
    assert lost and all(r.data.tags.get("squeeze.failure") == "lost" for r in lost)
    finished = {k: r.info.end_time for k, r in _finished(children).items()}
    done = _study(workdir, f)
    assert done.returncode == 0, done.stderr[-3000:]
    _, parents, children = study_runs(workdir, "lost")
    assert len(children) == 3 and len(_finished(children)) == 3 and len(parents) == 1  # 0 duplicated FINISHED runs
    assert all(_finished(children)[k].info.end_time == t for k, t in finished.items())


LISTENERS = """
import json, os, psutil
from squeeze.driver import sweep
sweep.init_ray()
me = psutil.Process()
procs = [me] + me.children(recursive=True)
addrs = set()
for p in procs:
    try:
        addrs |= {c.laddr.ip for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        pass
token = os.path.expanduser("~/.ray/auth_token")
print(json.dumps({"addrs": sorted(addrs), "token": oct(os.stat(token).st_mode & 0o777) if os.path.exists(token) else None}))
"""


def test_the_private_ray_listens_only_on_loopback_and_its_token_is_private(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    out = subprocess.run([sys.executable, "-c", LISTENERS], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["addrs"], got  # GCS, raylet and workers were seen listening
    assert all(a in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for a in got["addrs"]), got["addrs"]
    assert got["token"] in (None, "0o600"), got


def test_sigterm_while_tokenizing_exits_130_before_any_run(workdir):
    f = workdir / "tok.yaml"
    f.write_text(yaml.safe_dump({"experiment": "tok", "sweeps": [
        {"name": "big", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 400_000},
         "train": {"epochs": 1, "max_length": 32}, "measure": {"latency": False}}]}))
    env = dict(os.environ, SQUEEZE_PROGRESS_EVERY_S="1")
    proc = subprocess.Popen([sys.executable, "-m", "squeeze.cli", "study", str(f)], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # the progress line of a long tokenization, then SIGTERM in the middle of it
        seen.append(line)
        if "tokenizing train:" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    _, parents, children = study_runs(workdir, "tok")
    assert parents == [] and children == []  # nothing started, nothing left RUNNING


def test_a_minilm_trial_leaves_no_checkpoint_bytes_once_its_stage_ends(workdir, ray_session):
    """The real-size case of the disk bound: a pre-trained MiniLM (22.7M parameters, 2 epochs, 2 checkpoints kept
    while it runs) leaves nothing in ray_results once its model is in MLflow."""
    f = workdir / "mini.yaml"
    f.write_text(yaml.safe_dump({"experiment": "mini", "checkpoints_to_keep": 2, "sweeps": [
        {"name": "m", "task": "sentiment", "model": {"name": "minilm"}, "data": {"size": 40, "split": [0.5, 0.25, 0.25]},
         "train": {"epochs": 2, "batch_size": 8, "max_length": 32}, "measure": {"latency": False}}]}))
    assert cli.main(["study", str(f)]) == 0
    left = sum(p.stat().st_size for p in (workdir / "ray_results").rglob("*") if p.is_file())
    _, _, children = study_runs(workdir, "mini")
    assert [r.info.status for r in children] == ["FINISHED"]
    assert children[0].data.metrics["size/disk_mb"] > 40  # a real model was trained and saved (fp32 MiniLM ~87 MB)
    assert left == 0, left
