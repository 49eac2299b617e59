"""The cluster path through Ray's autoscaler and Jobs API, on this machine: a head started by `ray start` with an
autoscaling config (Ray's fake multi-node provider: worker nodes are launched as local processes when trials ask
for CPUs), a sweep submitted with `ray job submit`'s API, its trials on the autoscaled workers, its runs in a real
MLflow server. What this cannot reach here: SSH, the AWS provider, S3 (see the README's cluster section)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml
from helpers import free_port

pytestmark = pytest.mark.slow


def _autoscaling_config(path: str, gcs_address: str) -> None:
    """Ray's fake multi-node example config (not shipped in the wheel): a CPU-less head, 1-CPU workers on demand."""
    cfg = {"cluster_name": "squeeze-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 1,
           "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                        "disable_launch_config_check": True, "gcs_address": gcs_address},
           "available_node_types": {
               "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
               "ray.worker.cpu": {"resources": {"CPU": 1, "object_store_memory": 300_000_000}, "node_config": {},
                                  "min_workers": 0, "max_workers": 2}},
           "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "initialization_commands": [],
           "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
           "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
           "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": []}
    with open(path, "w") as fh:
        json.dump(cfg, fh)


def _stop(marker: str) -> None:
    """Stop exactly this cluster's processes (every one names its GCS address), not another Ray on the machine."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(p.info["cmdline"] or []):
                p.send_signal(signal.SIGKILL)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


@pytest.fixture
def autoscaling_head(tmp_path):
    import ray

    ray.shutdown()
    port, dash, agent = free_port(), free_port(), free_port()
    config = str(tmp_path / "autoscaling.json")
    from ray._private.services import get_node_ip_address

    _autoscaling_config(config, f"{get_node_ip_address()}:{port}")  # the workers' GCS (not the default 6379)
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_FAKE_CLUSTER="1",
               PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    temp = tempfile.mkdtemp(prefix="sqzray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    subprocess.run([os.path.join(bin_dir, "ray"), "start", "--head", f"--port={port}", "--num-cpus=0",
                    f"--autoscaling-config={config}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash}",
                    f"--dashboard-agent-listen-port={agent}", f"--temp-dir={temp}", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=180)
    yield f"http://127.0.0.1:{dash}"
    _stop(f":{port}")
    _stop(temp)


def test_a_submitted_sweep_runs_on_autoscaled_workers_and_reaches_mlflow(tmp_path, autoscaling_head, mlflow_server):
    from mlflow import MlflowClient
    from ray.job_submission import JobStatus, JobSubmissionClient

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "tiny.yaml").write_text(yaml.safe_dump({"experiment": "launcher", "sweeps": [{
        "name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 80},
        "train": {"epochs": 1, "batch_size": 16, "max_length": 32}, "measure": {"latency": False},
        "search_space": {"seed": {"grid_search": [0, 1]}}}]}))
    client = JobSubmissionClient(autoscaling_head)
    offline = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                                          "PYTHONPATH", "RAY_AUTH_MODE") if k in os.environ}
    offline["SQUEEZE_STORAGE_PATH"] = str(tmp_path / "results")  # an absolute path: the job's cwd is a temp copy
    for attempt in range(240):  # the head's job agent takes a few seconds after `ray start` to accept jobs
        try:
            # the file by its path, no `working_dir`: fake nodes share this machine's runtime-env folder, and with
            # one the uploaded directory vanished under the running driver as workers came up (a first trial's
            # actor died before it ran, then the driver's cwd was gone); separate machines each have their own
            job = client.submit_job(entrypoint=f"{sys.executable} -m squeeze.cli sweep {job_dir / 'tiny.yaml'} "
                                               f"--tracking-uri {mlflow_server}", runtime_env={"env_vars": offline})
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or attempt == 239:
                raise
            time.sleep(1)
    deadline = time.time() + 420
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, client.get_job_logs(job)[-12000:]
        time.sleep(2)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-12000:]
    mlflow = MlflowClient(tracking_uri=mlflow_server)
    exp = mlflow.get_experiment_by_name("launcher")
    runs = mlflow.search_runs([exp.experiment_id], "tags.`squeeze.trial_id` != ''")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    from ray.util.state import list_nodes

    workers = {n.node_id for n in list_nodes(address=autoscaling_head, limit=100) if not n.is_head_node}
    assert workers  # the autoscaler launched worker nodes for the trials (the head has no CPU for them)
    assert {r.data.tags["ray.node_id"] for r in runs} <= workers
