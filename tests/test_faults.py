"""Fault tolerance: failing trials, retries from checkpoint, a killed driver, a tracking outage,
the checkpoint budget, and security defaults. Nothing finished may be lost or duplicated."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
import yaml
from helpers import kill_driver

from squeeze import cli

pytestmark = pytest.mark.slow


def _study(workdir, name, *, seeds=(0, 1), epochs=3, fail=None, **extra):
    sweep = {"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 80},
             "train": {"epochs": epochs, "batch_size": 16, "max_length": 32, "lr": 1e-3},
             "measure": {"latency": False}, "search_space": {"seed": {"grid_search": list(seeds)}}}
    if fail is not None:
        sweep["technique"] = ["faulty:FailOnce"]
        sweep["params"] = {"faulty:FailOnce": {"steps_per_epoch": 3, **fail}}  # 40 train / 16 = 3 steps
    keep, concurrent = extra.pop("keep", 2), extra.pop("max_concurrent_trials", 0)
    sweep.update(extra)
    doc = {"experiment": name, "sweeps": [sweep], "checkpoints_to_keep": keep, "max_concurrent_trials": concurrent}
    f = workdir / f"{name}.yaml"
    f.write_text(yaml.safe_dump(doc))
    return str(f)


def _children(workdir, experiment):
    from squeeze.tracking import mlflow_client

    client = mlflow_client(f"sqlite:///{workdir / 'mlflow.db'}")  # polls a store the driver may be creating
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`squeeze.trial_id` != ''")
    return client, runs


def test_nan_loss_marks_the_trial_failed_and_the_others_finish(workdir, ray_session):
    f = _study(workdir, "nan", fail={"mode": "nan", "at_epoch": 1, "only_seed": 1})
    assert cli.main(["sweep", f]) == 1  # a trial errored: non-zero exit, results kept
    client, runs = _children(workdir, "nan")
    status = {r.data.params["train.seed"]: r for r in runs}
    assert status["0"].info.status == "FINISHED" and "test/accuracy" in status["0"].data.metrics
    assert status["1"].info.status == "FAILED"
    assert "training loss became nan in epoch 1" in status["1"].data.tags["squeeze.error"]
    parent = client.search_runs([runs[0].info.experiment_id], "tags.`squeeze.parent` = '1'")[0]
    assert parent.data.metrics["trials_failed"] == 1 and parent.info.status == "FINISHED"


def test_failed_trial_is_retried_from_its_checkpoint(workdir, ray_session):
    marker = workdir / "failed-once"
    f = _study(workdir, "retry", seeds=(0,), epochs=3, max_failures=1,
               fail={"mode": "raise", "at_epoch": 1, "marker": str(marker)})
    assert cli.main(["sweep", f]) == 0
    assert marker.exists()  # it did fail once
    client, runs = _children(workdir, "retry")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the retry continued the same MLflow run
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert sorted(steps) == [0, 1, 2]  # epoch 0 was not trained again: resumed from its checkpoint


def test_checkpoints_are_kept_within_budget_and_dropped_when_the_stage_is_done(workdir, ray_session):
    f = _study(workdir, "budget", seeds=(0,), epochs=4, keep=1, fail={"mode": "raise", "at_epoch": 3})
    assert cli.main(["sweep", f]) == 1  # failed in its last epoch, after three checkpoints: one kept for a retry
    stage = next((workdir / "ray_results").glob("budget-s-*"))
    points = list((stage / "points").iterdir())
    assert len(points) == 1 and [d.name for d in points[0].iterdir()] == ["epoch-0002"]
    assert [d.name for d in stage.iterdir()] == ["points"]  # Tune's own folders are gone: squeeze never reads them
    f = _study(workdir, "done", seeds=(0, 1), epochs=3, keep=2)
    assert cli.main(["sweep", f]) == 0
    stage = next((workdir / "ray_results").glob("done-s-*"))
    assert [p for p in stage.rglob("*") if p.is_file()] == []  # finished trials: model in MLflow, no checkpoint left


def test_a_storage_uri_from_the_environment_holds_the_trials_and_is_cleaned_through_its_filesystem(workdir, ray_session,
                                                                                                   monkeypatch):
    """SQUEEZE_STORAGE_PATH (what cluster.yaml sets on every node) as a URI: Tune writes there, not under a
    folder named after the URI in the working directory, and the finished stage's checkpoints are deleted
    through pyarrow's filesystem of the URI (file:// here; s3:// takes the same path)."""
    store = workdir / "shared"
    monkeypatch.setenv("SQUEEZE_STORAGE_PATH", f"file://{store}")
    f = _study(workdir, "uri", seeds=(0,), epochs=2)
    assert cli.main(["sweep", f]) == 0
    stage = next(store.glob("uri-s-*"))
    assert not [p for p in stage.rglob("*") if p.is_file()]  # written there, and cleaned through the URI's filesystem
    assert not (workdir / "ray_results").exists() and not list(workdir.glob("file:*"))


def test_killed_driver_resumes_only_unfinished_trials(workdir):
    """SIGKILL the whole driver process group mid-sweep, then --resume: exactly one FINISHED run per trial."""
    import ray

    ray.shutdown()  # the resumed driver starts its own Ray
    f = _study(workdir, "kill", seeds=(0, 1, 2), epochs=3, max_concurrent_trials=1,
               fail={"mode": "none", "sleep_s": 0.25})
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "squeeze.cli", "sweep", f], cwd=workdir, env=env,
                            stdout=open(workdir / "first.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    finished_before = set()
    while time.time() < deadline:
        time.sleep(1)
        if (workdir / "mlflow.db").exists():
            try:
                _, runs = _children(workdir, "kill")
            except Exception:
                continue
            finished_before = {r.data.tags["squeeze.trial_id"] for r in runs if r.info.status == "FINISHED"}
            if finished_before and any(r.info.status == "RUNNING" for r in runs):
                break
    assert finished_before, (workdir / "first.log").read_text()[-3000:]
    kill_driver(proc)  # the driver and the local Ray it started
    done = subprocess.run([sys.executable, "-m", "squeeze.cli", "sweep", f, "--resume"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, runs = _children(workdir, "kill")
    ids = [r.data.tags["squeeze.trial_id"] for r in runs]
    assert len(ids) == 3 and len(set(ids)) == 3  # no duplicated run
    assert all(r.info.status == "FINISHED" for r in runs)  # none left RUNNING
    client = _children(workdir, "kill")[0]
    for r in runs:  # every trial trained each epoch exactly once, across the kill
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "train/loss")) == [0, 1, 2]


def test_metrics_survive_a_tracking_server_outage(tmp_path, monkeypatch):
    """Stop the real MLflow server mid-trial: metrics are buffered, then all arrive when it is back."""
    import requests

    from helpers import free_port
    from squeeze import tracking

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}", "--artifacts-destination", str(tmp_path / "a")]

    def start():
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        for _ in range(240):
            try:
                if requests.get(uri + "/health", timeout=1).ok:
                    return p
            except requests.RequestException:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    server = start()
    try:
        exp = tracking.ensure_experiment(uri, "outage")
        parent = tracking.start_parent(uri, exp, "s", "x: 1", {})
        run = tracking.TrialRun(uri, exp, parent, "t1", "t1", {})
        run.log_metrics({"val/a": 0.1}, step=0)
        server.terminate()
        server.wait()
        for step in (1, 2, 3):
            run.log_metrics({"val/a": 0.1 * (step + 1)}, step=step)  # never raises; buffered
        assert len(run.pending) == 3
        server = start()
        run.finish()
        history = tracking.mlflow_client(uri).get_metric_history(run.run_id, "val/a")
        assert sorted(m.step for m in history) == [0, 1, 2, 3]  # 4 sent, 4 stored: none lost
        assert tracking.mlflow_client(uri).get_run(run.run_id).info.status == "FINISHED"
    finally:
        server.terminate()
        server.wait()


def test_processes_opening_a_fresh_sqlite_store_at_once_all_succeed(tmp_path):
    """MLflow migrates a fresh SQLite store on first open; unserialised, concurrent opens leave it half-migrated
    (``table _alembic_tmp_... already exists``), which is how a sweep and a poller broke each other."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = ("import sys; from squeeze.tracking import mlflow_client; "
            "c = mlflow_client(sys.argv[1]); c.create_experiment(sys.argv[2]); print('opened')")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, f"e{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(4)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(o[-1500:] for o in outs)
    from squeeze.tracking import mlflow_client

    names = {e.name for e in mlflow_client(uri).search_experiments()}
    assert {"e0", "e1", "e2", "e3"} <= names


def test_ui_binds_localhost_by_default():
    args = cli._parser().parse_args(["ui"])
    cmd = cli.ui_command(args)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_checkpoints_never_unpickle_code(tmp_path):
    """A checkpoint whose optimizer file carries a pickled callable is refused, and the callable never runs."""
    import pickle

    from helpers import prepared_for, recipe, tiny_sweep
    from squeeze import checkpoint

    sweep = tiny_sweep("sentiment", size=40, epochs=1)
    prepared = prepared_for(sweep, tmp_path)
    loop = recipe(sweep, prepared, tmp_path).loop
    checkpoint.save(loop, tmp_path / "ck")
    pwned = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(pwned), "w"))

    (tmp_path / "ck" / "optim.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(loop, tmp_path / "ck")
    assert not pwned.exists()


def test_mlflow_has_the_path_traversal_fixes():
    from importlib.metadata import version

    from packaging.version import Version

    assert Version(version("mlflow")) >= Version("2.11.3")


def test_cluster_yaml_matches_rays_autoscaler_schema():
    import json

    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = yaml.safe_load(open(os.path.join(root, "cluster.yaml")))
    schema = json.load(open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")))
    jsonschema.validate(cfg, schema)
    validate_config(prepare_config(cfg))
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start and "RAY_AUTH_MODE=token" in start
    text = open(os.path.join(root, "cluster.yaml")).read().lower()
    assert "aws_secret_access_key" not in text and "password" not in text
    ports = [p["FromPort"] for p in cfg["provider"]["security_group"]["IpPermissions"]]
    assert ports == [22]
    # the token travels from `ray get-auth-token --generate` to every node's default path, never in the repo
    assert cfg["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert "RAY_AUTH_MODE=token" in " ".join(cfg["worker_start_ray_commands"])
    setup = " ".join(cfg["setup_commands"])  # one block for every node type
    assert "ray[default]" in setup and "boto3" in setup and "/home/ubuntu/squeeze[minilm]" in setup
    assert cfg["file_mounts"]["/home/ubuntu/squeeze"] == "." and ".venv" in cfg["rsync_exclude"]
    assert setup.index("apt-get update") < " ".join(cfg["setup_commands"] + cfg["head_setup_commands"]).index("apt-get install")
    assert "|| true" not in text and "git+https" not in text
    assert "MLFLOW_TRACKING_URI" in start and "SQUEEZE_STORAGE_PATH=s3://" in start


def _prune_study(workdir, name, fail: dict) -> str:
    sweep = {"name": "p", "task": "lm", "technique": ["imp_prune", "faulty:FailOnce"], "model": {"name": "tiny-bert"},
             "data": {"size": 240}, "train": {"epochs": 3, "batch_size": 16, "max_length": 32, "lr": 1e-3},
             "measure": {"latency": False}, "max_failures": 1,
             "params": {"imp_prune": {"sparsity": 0.5, "every": 3}, "faulty:FailOnce": fail}}
    f = workdir / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"experiment": name, "sweeps": [sweep]}))
    return str(f)


def test_retried_prune_trial_keeps_its_masks_and_schedule(workdir, ray_session):
    """A prune-stage trial that fails mid-epoch and resumes from its checkpoint ends exactly as an uninterrupted
    one: same prune events at the same steps, same final masks and sparsity (the masks and the schedule position
    are technique state saved in the checkpoint)."""
    import mlflow

    from squeeze import config, families, formats
    from squeeze.prepare import prepare

    sweep = config.load(_prune_study(workdir, "plain", {"mode": "none"})).sweeps[0]
    steps_per_epoch = -(-len(prepare(sweep, workdir / ".squeeze_cache").features["train"]) // 16)
    at = steps_per_epoch + 5  # in epoch 1, after that epoch's first prune events
    assert 7 * 3 > at > steps_per_epoch + 3  # 7 events (0.9^7 < 0.5) at steps 3..21 straddle the failure
    marker = workdir / "failed-once"
    assert cli.main(["sweep", _prune_study(workdir, "plain", {"mode": "none"})]) == 0
    assert cli.main(["sweep", _prune_study(workdir, "retried", {"mode": "raise", "at_step": at,
                                                                "marker": str(marker)})]) == 0
    assert marker.exists()  # it failed once, then resumed from the epoch-0 checkpoint
    out = {}
    for name in ("plain", "retried"):
        client, runs = _children(workdir, name)
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        rid = runs[0].info.run_id
        history = client.get_metric_history(rid, "prune/sparsity")
        d = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="model", dst_path=str(workdir / name),
                                                tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
        weights = families.prunable(formats.load(d))
        out[name] = {"events": sorted((m.step, m.value) for m in history), "metrics": runs[0].data.metrics,
                     "masks": {k: (w == 0) for k, w in weights.items()}}
    plain, retried = out["plain"], out["retried"]
    assert [s for s, _ in plain["events"]] == [3, 6, 9, 12, 15, 18, 21]
    assert retried["events"] == plain["events"]
    for key in ("prune/events", "prune/final_sparsity", "prune/forced"):
        assert retried["metrics"][key] == plain["metrics"][key], key
    assert all(torch.equal(retried["masks"][k], m) for k, m in plain["masks"].items())
