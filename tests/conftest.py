"""Shared fixtures: offline environment, a tmp working dir, a Ray session, a real MLflow server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                  RAY_USAGE_STATS_ENABLED="0", TOKENIZERS_PARALLELISM="false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the fault-injection technique (tests/plugins/faulty.py) must import in Ray workers too, which
# inherit this environment when the tests start Ray
PLUGINS = os.path.join(ROOT, "tests", "plugins")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PLUGINS, os.environ.get("PYTHONPATH", "")) if p)
sys.path.insert(0, PLUGINS)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh directory so mlflow.db, ray_results and caches land in tmp."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def ray_session():
    """A local 2-CPU Ray, started once and reused; tests that need their own cluster shut it down first."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    return ray


@pytest.fixture(scope="session", autouse=True)
def _ray_shutdown_at_exit():
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (1 worker, job execution off: about 0.5 GiB)."""
    import requests

    d = tmp_path_factory.mktemp("mlflow_server")
    from helpers import free_port

    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}", "--artifacts-destination", str(d / "artifacts")],
        stdout=open(d / "server.log", "w"), stderr=subprocess.STDOUT, env=env)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(uri + "/health", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError((d / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start: " + (d / "server.log").read_text()[-3000:])
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
