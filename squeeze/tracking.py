"""The only MLflow code: experiments, a parent run per sweep, a child run per trial.

Trials log straight to the tracking server from wherever Ray placed them (no shared local
paths are assumed: with an ``http://`` URI artifacts go through the server). A child run is
found again by its ``squeeze.trial_id`` tag, so a resumed or retried trial continues its run
instead of duplicating it. Metric writes are retried and, if the server stays away, buffered
until it is back.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from squeeze.checksum import verify_manifest, write_manifest

log = logging.getLogger(__name__)

PARENT_TAG, TRIAL_TAG, SWEEP_TAG = "squeeze.parent", "squeeze.trial_id", "squeeze.sweep"
FAILURE_TAG = "squeeze.failure"  # raised (the trial's own error: not re-run unless asked), lost (its process died)
METRICS_TAG, PRETRAINING_TAG = "squeeze.metrics", "squeeze.pretraining"
NESTED = "mlflow.parentRunId"


def trial_tags(cfg) -> dict[str, str]:
    """What a trial run says about itself, the task's metric directions included (so ``analysis`` can read
    them from the run, for a task it does not know)."""
    import json

    from squeeze.registry import get_task, technique_label

    task = get_task(cfg.task)
    return {"task": cfg.task, "technique": technique_label(cfg.technique), "model": cfg.model.name, SWEEP_TAG: cfg.name,
            METRICS_TAG: json.dumps(task.metrics), PRETRAINING_TAG: str(int(task.pretraining)), **source_tags()}


class TrackingError(RuntimeError):
    """The tracking server or store cannot be used."""


_USERINFO = __import__("re").compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def mask_secrets(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://***@host`` anywhere in ``text`` (errors, tags, console)."""
    return _USERINFO.sub(lambda m: m.group("scheme") + "***@", str(text))


SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def default_uri(cwd: str | Path | None = None) -> str:
    """Local SQLite store in the working directory, as an absolute URI (trials run elsewhere)."""
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def resolve_uri(cli: str | None = None, config: str | None = None) -> str:
    """The tracking URI, decided once on the driver: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the sweep
    file's ``tracking_uri``, else ``./mlflow.db``; a relative SQLite or file path becomes absolute (trials run in
    other working directories)."""
    origin = "--tracking-uri" if cli else "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "tracking_uri"
    uri = cli or os.environ.get("MLFLOW_TRACKING_URI") or config or default_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).expanduser().resolve()}"
    if "://" not in uri:  # a plain folder: MLflow's file store, only one that exists (a typo would become a new store)
        if not Path(uri).expanduser().is_dir():
            raise TrackingError(f"{origin} {mask_secrets(uri)!r}: not a URI and not an existing MLflow file-store folder; "
                                f"use sqlite:///PATH.db, http://HOST:PORT or another of {', '.join(SCHEMES)}")
        return Path(uri).expanduser().resolve().as_uri()
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in SCHEMES:
        raise TrackingError(f"{origin} {mask_secrets(uri)!r}: unknown scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
    return uri


def require_store(uri: str) -> None:
    """Reading commands (ls, report) never create a store: a missing local one is an error.

    Raises:
        TrackingError: naming the path and what to do.
    """
    if not store_exists(uri):
        raise TrackingError(f"no MLflow store at {uri[len('sqlite:///'):]}: run a sweep here first, or pass "
                            "--tracking-uri (or set MLFLOW_TRACKING_URI)")
    check_reachable(uri)


_OPENED: set[str] = set()


def mlflow_client(uri: str):
    """An ``MlflowClient`` for ``uri``; a local SQLite store is created or migrated by one process at a time.

    MLflow creates and migrates a fresh SQLite store on first use. Two processes doing that at once (a
    sweep starting while ``squeeze ls`` or a notebook polls the same file) leave a half-migrated schema
    (``table _alembic_tmp_... already exists``) that breaks every later open, so the first open in each
    process holds an exclusive lock on ``<db>.lock``.
    """
    from mlflow import MlflowClient

    if not uri.startswith("sqlite:///") or uri in _OPENED:
        return MlflowClient(tracking_uri=uri)
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # MlflowClient() opens (creates, migrates) the store
        c = MlflowClient(tracking_uri=uri)
    _OPENED.add(uri)
    return c


def _retry(fn: Callable[[], Any], what: str, attempts: int = 6, delay: float = 0.5) -> Any:
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # sqlite "database is locked", connection resets, 5xx
            if i == attempts - 1:
                raise
            log.warning("MLflow %s failed (%s); retrying", what, exc)
            time.sleep(delay * 2**i)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any trial, when an HTTP tracking server does not answer.

    Raises:
        TrackingError: with the URI and the reason.
    """
    if uri.startswith("sqlite:///"):  # the store's folder must exist or be creatable, and be writable
        from squeeze.folders import why_unwritable

        folder = Path(uri[len("sqlite:///"):]).parent
        why = why_unwritable(folder)
        if why:
            raise TrackingError(f"MLflow store {uri}: its folder {folder} {why}")
        return
    if not uri.startswith(("http://", "https://")):
        # a database or file store: ask it for one experiment (MLflow 3 refuses its file store unless
        # MLFLOW_ALLOW_FILE_STORE=true, which would otherwise surface as a traceback once the sweep starts)
        try:
            mlflow_client(uri).search_experiments(max_results=1)
        except Exception as exc:
            fix = "use sqlite:///PATH.db or a tracking server" if uri.startswith("file:") else \
                "start it or pass --tracking-uri"
            raise TrackingError(f"MLflow store {mask_secrets(uri)} cannot be used ({type(exc).__name__}: "
                                f"{mask_secrets(str(exc))[:1000]}); {fix}") from None
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except Exception as exc:
        raise TrackingError(f"MLflow tracking server {mask_secrets(uri)} is unreachable ({type(exc).__name__}: "
                            f"{mask_secrets(str(exc))[:300]}); start it or pass --tracking-uri") from None


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """Get or create the experiment; a local store gets an absolute artifact location."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if artifact_location is None and not uri.startswith(("http://", "https://")):
        root = Path(uri.split("///", 1)[-1]).parent if uri.startswith("sqlite") else Path.cwd()
        artifact_location = (root / "mlartifacts" / name).resolve().as_uri()
    # MLflow 3 opens an experiment on its model-training view with this tag (else it may guess the GenAI one)
    return client.create_experiment(name, artifact_location=artifact_location,
                                    tags={"mlflow.experimentKind": "custom_model_development"})


def source_tags() -> dict[str, str]:
    """MLflow's standard provenance tags: where the code came from."""
    from squeeze.provenance import git_commit

    return {"mlflow.source.name": "squeeze", "mlflow.source.type": "LOCAL", "mlflow.source.git.commit": git_commit(),
            "mlflow.user": os.environ.get("USER", "squeeze")}


def start_parent(uri: str, experiment_id: str, sweep: str, config_text: str, tags: dict[str, str]) -> str:
    """Create the parent run of a sweep, holding the resolved YAML as an artifact."""
    client = mlflow_client(uri)
    run = client.create_run(experiment_id, run_name=sweep, tags={PARENT_TAG: "1", SWEEP_TAG: sweep, **tags})
    client.log_text(run.info.run_id, config_text, "config/resolved.yaml")
    return run.info.run_id


def finish_parent(uri: str, run_id: str, metrics: dict[str, float], tags: dict[str, str], failed: bool) -> None:
    client = mlflow_client(uri)
    for k, v in tags.items():
        client.set_tag(run_id, k, v)
    _log_metrics(client, run_id, metrics, step=0)
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def _log_metrics(client, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
    for i in range(0, len(batch), 900):
        client.log_batch(run_id, metrics=batch[i:i + 900], synchronous=True)


STOPPED_TAG = "squeeze.stopped_early"  # a scheduler stopped the trial between epochs: FINISHED, without a model


def stopped_early(run) -> bool:
    return STOPPED_TAG in run.data.tags


def find_trial_run(uri: str, experiment_id: str, parent_id: str, trial_id: str):
    runs = mlflow_client(uri).search_runs([experiment_id], f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{NESTED}` = '{parent_id}'")
    return runs[0] if runs else None


def mark_stopped(uri: str, experiment_id: str, parent_id: str, key: str, reason: str,
                 close_by: float | None = None) -> None:
    """A scheduler stops the trial of point ``key``: its run is tagged first (the trial, told to stop, reads the tag
    and closes its run FINISHED); with ``close_by`` (a ``time.monotonic()`` deadline) the driver waits for that and
    closes the run itself when the trial's process ended first."""
    import time

    client = mlflow_client(uri)
    run = _retry(lambda: find_trial_run(uri, experiment_id, parent_id, key), "search")
    if run is None:
        return
    _retry(lambda: client.set_tag(run.info.run_id, STOPPED_TAG, reason), "set_tag")
    if close_by is None:
        return
    while client.get_run(run.info.run_id).info.status == "RUNNING" and time.monotonic() < close_by:
        time.sleep(0.5)
    if client.get_run(run.info.run_id).info.status != "FINISHED":
        client.set_terminated(run.info.run_id, "FINISHED")


class TrialRun:
    """The MLflow child run of one Ray trial (created once, found again on resume)."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str, trial_id: str, name: str, tags: dict[str, str]):
        self.uri, self.client, self.pending = uri, mlflow_client(uri), []
        self.resumed, self.seen = False, {}
        existing = _retry(lambda: find_trial_run(uri, experiment_id, parent_id, trial_id), "search")
        if existing is not None:
            self.run_id, self.resumed = existing.info.run_id, True
            _retry(lambda: self.client.update_run(self.run_id, status="RUNNING"), "update_run")
        else:
            run = _retry(lambda: self.client.create_run(
                experiment_id, run_name=name, tags={NESTED: parent_id, TRIAL_TAG: trial_id, **tags}), "create_run")
            self.run_id = run.info.run_id

    def tag(self, name: str) -> str | None:
        """A tag of this run as it is in the store now (a resumed run's checkpoint record)."""
        return _retry(lambda: self.client.get_run(self.run_id), "get_run").data.tags.get(name)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in have]
        for i in range(0, len(items), 90):
            _retry(lambda: self.client.log_batch(self.run_id, params=items[i:i + 90], synchronous=True), "log_params")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log now if possible; otherwise keep them and send them with the next call."""
        self.pending.append((dict(metrics), step))
        try:
            self.flush(attempts=3)
        except Exception as exc:
            log.warning("MLflow unreachable; %d metric batches buffered (%s)", len(self.pending), exc)

    def _new(self, metrics: dict[str, float], step: int) -> dict[str, float]:
        """A resumed trial repeats the steps after its last checkpoint: log each (key, step) once."""
        if not self.resumed:
            return metrics
        for key in metrics:
            if key not in self.seen:
                self.seen[key] = {m.step for m in self.client.get_metric_history(self.run_id, key)}
        fresh = {k: v for k, v in metrics.items() if step not in self.seen[k]}
        for k in fresh:
            self.seen[k].add(step)
        return fresh

    def flush(self, attempts: int = 8) -> None:
        while self.pending:
            metrics, step = self.pending[0]
            _retry(lambda: _log_metrics(self.client, self.run_id, self._new(metrics, step), step), "log_metrics", attempts)
            self.pending.pop(0)

    def log_series(self, key: str, points: list[tuple[int, float]]) -> None:
        """A step series (the power trace) in batches, not one request per point."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(v), now, int(step)) for step, v in points]
        for i in range(0, len(batch), 900):
            _retry(lambda: self.client.log_batch(self.run_id, metrics=batch[i:i + 900], synchronous=True), "log_series")

    def log_datasets(self, name: str, digest: str, source: str, sizes: dict[str, int]) -> None:
        """The trial's train/dev/test data as MLflow dataset inputs (once per run)."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        if self.client.get_run(self.run_id).inputs.dataset_inputs:
            return
        inputs = [DatasetInput(Dataset(name=f"{name} ({split})"[:500], digest=digest[:36], source_type="local",
                                       source=source[:5000], profile=json.dumps({"num_rows": n})),
                               tags=[InputTag("mlflow.data.context", {"dev": "validation"}.get(split, split))])
                  for split, n in sizes.items()]
        _retry(lambda: self.client.log_inputs(self.run_id, datasets=inputs), "log_inputs")

    def log_artifacts(self, directory: str | Path, artifact_path: str) -> None:
        _retry(lambda: self.client.log_artifacts(self.run_id, str(directory), artifact_path), "log_artifacts")

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            _retry(lambda: self.client.set_tag(self.run_id, k, str(v)[:5000]), "set_tag")

    def finish(self) -> None:
        self.flush()
        _retry(lambda: self.client.set_terminated(self.run_id, "FINISHED"), "set_terminated")

    def fail(self, exc: BaseException) -> None:
        """Mark FAILED with the reason; never masks the original exception."""
        try:
            self.flush(attempts=3)
        except Exception:
            pass
        try:
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            # Ctrl-C reaches a trial as KeyboardInterrupt, or as SystemExit when Ray ends its actor: not its own error
            stopped = isinstance(exc, (KeyboardInterrupt, SystemExit)) or "Cancel" in type(exc).__name__
            if stopped:
                text = f"interrupted ({text})"
            self.client.set_tag(self.run_id, "squeeze.error", mask_secrets(text)[:5000])
            self.client.set_tag(self.run_id, FAILURE_TAG, "interrupted" if stopped else "raised")
            self.client.set_terminated(self.run_id, "KILLED" if stopped else "FAILED")
        except Exception as err:  # the trial's own error matters more than this one
            log.error("could not mark MLflow run %s FAILED: %s", self.run_id, err)


def mark_unfinished_failed(uri: str, experiment_id: str, parent_id: str, trial_id: str, reason: str) -> None:
    """Driver side: a trial died without closing its run (node lost, OOM kill)."""
    run = find_trial_run(uri, experiment_id, parent_id, trial_id)
    if run is not None and run.info.status == "RUNNING":
        client = mlflow_client(uri)
        client.set_tag(run.info.run_id, "squeeze.error", reason[:5000])
        client.set_tag(run.info.run_id, FAILURE_TAG, "lost")  # the process died: not the trial's own doing
        client.set_terminated(run.info.run_id, "FAILED")


def trial_status_callback(uri: str, experiment_id: str, parent_id: str):
    """A Ray Tune callback that closes the MLflow run of a trial that errored out."""
    from ray import tune

    class _TrialStatus(tune.Callback):
        def on_trial_error(self, iteration, trials, trial, **info):
            reason = f"trial {trial.trial_id} errored"
            if trial.error_file and os.path.isfile(trial.error_file):
                reason = Path(trial.error_file).read_text()[-4000:]
            key = ((trial.config or {}).get("point") or {}).get("key", trial.trial_id)  # the run is named by its point
            try:
                mark_unfinished_failed(uri, experiment_id, parent_id, key, mask_secrets(reason))
            except Exception as exc:
                log.error("could not close the MLflow run of trial %s: %s", trial.trial_id, exc)

    return _TrialStatus()


def store_exists(uri: str) -> bool:
    """Is there a tracking store at ``uri``? (A local SQLite file that does not exist is not created by asking.)"""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).is_file()
    return True


def finished_sweep_exists(uri: str, experiment: str, sweep: str) -> bool:
    """Does the experiment hold a finished trial of ``sweep`` (a source that is not in the file)?"""
    if not store_exists(uri):
        return False
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return False
    parents = client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '1' and tags.`{SWEEP_TAG}` = '{sweep}'")
    return any(client.search_runs([exp.experiment_id], f"tags.`{NESTED}` = '{p.info.run_id}' and attributes.status = "
                                                       "'FINISHED'", max_results=1) for p in parents)


def stage_parents(uri: str, experiment_id: str, sweep: str) -> list:
    """The parent runs of a sweep (every time a stage was started), newest first."""
    return mlflow_client(uri).search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '1' and tags.`{SWEEP_TAG}` = '{sweep}'",
                                          order_by=["attributes.start_time DESC"], max_results=1000)


def close_run_tree(uri: str, experiment_id: str, parent_id: str, reason: str, status: str = "KILLED") -> int:
    """Mark a parent run and its RUNNING trial runs ``status`` with ``reason`` (an interrupted or dead stage);
    returns how many trial runs it closed."""
    client = mlflow_client(uri)
    children = client.search_runs([experiment_id], f"tags.`{NESTED}` = '{parent_id}' and attributes.status = 'RUNNING'",
                                  max_results=50000)
    for r in children:
        client.set_tag(r.info.run_id, "squeeze.error", reason)
        client.set_terminated(r.info.run_id, status)
    client.set_tag(parent_id, "squeeze.stopped", reason)
    client.set_terminated(parent_id, status)
    return len(children)


def reopen(uri: str, run_id: str) -> None:
    """A parent run resumed by a new driver runs again."""
    mlflow_client(uri).update_run(run_id, status="RUNNING")


def source_runs(uri: str, experiment_id: str, sweep: str, *, select: str, per: str | None, metric: str, mode: str) -> list[str]:
    """Run ids of the FINISHED trials of ``sweep`` (its latest parent run) that a later sweep starts from.

    ``select``: ``all`` trials, the ``best`` by ``metric``, or the best per value of param ``per``.

    Raises:
        TrackingError: when the sweep has no finished trial in the experiment.
    """
    client = mlflow_client(uri)
    parents = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '1' and tags.`{SWEEP_TAG}` = '{sweep}'",
                                 order_by=["attributes.start_time DESC"])
    runs = []
    for parent in parents:
        runs = client.search_runs([experiment_id], f"tags.`{NESTED}` = '{parent.info.run_id}' and attributes.status = 'FINISHED'",
                                  max_results=10000)
        runs = [r for r in runs if not stopped_early(r)]  # stopped between epochs: no model to start from
        if runs:
            break
    if not runs:
        raise TrackingError(f"source sweep {sweep!r} has no finished trial in this experiment; run it first")
    if select == "all":
        return [r.info.run_id for r in sorted(runs, key=lambda r: r.info.start_time)]
    sign = 1 if mode == "max" else -1
    if select == "best_per" and not any(per in r.data.params for r in runs):
        known = sorted({k for r in runs for k in r.data.params if k.startswith("params.")})
        raise TrackingError(f"source.per {per!r}: no finished trial of {sweep!r} has that param; its technique params "
                            f"are {', '.join(known) or 'none'}")
    groups: dict = {}
    for r in runs:
        key = r.data.params.get(per) if select == "best_per" else None
        value = r.data.metrics.get(metric)
        if value is None or value != value:
            continue
        if key not in groups or sign * value > sign * groups[key][0]:
            groups[key] = (value, r.info.run_id)
    if not groups:
        raise TrackingError(f"source sweep {sweep!r}: no finished trial has metric {metric!r}")
    return [run_id for _, (_, run_id) in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def download_model(uri: str, run_id: str, cache_dir: str | Path) -> str:
    """The ``model`` artifact folder of a run: read in place from a local artifact store, else downloaded once per
    node into the cache."""
    import fcntl
    from urllib.parse import unquote, urlparse

    import mlflow

    artifact_uri = _retry(lambda: mlflow_client(uri).get_run(run_id).info.artifact_uri, "get_run")
    if artifact_uri.startswith("file:"):
        local = Path(unquote(urlparse(artifact_uri).path)) / "model"
        if (local / "config.json").is_file():
            return str(local)
    d = Path(cache_dir) / "models" / run_id
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(str(d) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not verify_manifest(d / "model"):  # never downloaded, or truncated / changed since: download again
            if d.exists():
                log.warning("cached model %s fails its checksum; downloading it again", d)
                shutil.rmtree(d)
            _retry(lambda: mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", dst_path=str(d),
                                                               tracking_uri=uri), "download_artifacts")
            write_manifest(d / "model")
    return str(d / "model")


def trial_runs(uri: str, experiment_id: str, parent_id: str) -> dict:
    """The trial runs of a parent run by point key (``squeeze.trial_id``), the newest where a key repeats."""
    runs = mlflow_client(uri).search_runs([experiment_id], f"tags.`{NESTED}` = '{parent_id}'", max_results=50000,
                                          order_by=["attributes.start_time ASC"])
    return {r.data.tags.get(TRIAL_TAG): r for r in runs}


def finished_children(uri: str, experiment_id: str, parent_id: str, without_tag: str | None = None) -> list[str]:
    """Run ids of the FINISHED trial runs of a sweep's parent run (``without_tag``: only those lacking that tag)."""
    runs = mlflow_client(uri).search_runs([experiment_id], f"tags.`{NESTED}` = '{parent_id}' and attributes.status = 'FINISHED'",
                                          max_results=50000, order_by=["attributes.start_time ASC"])
    return [r.info.run_id for r in runs if (without_tag is None or without_tag not in r.data.tags) and not stopped_early(r)]


def log_to_run(uri: str, run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
    """Metrics and tags measured after a trial ended (the driver's latency pass), added to its run."""
    client = mlflow_client(uri)
    _retry(lambda: _log_metrics(client, run_id, metrics, step=0), "log_metrics")
    for k, v in tags.items():
        _retry(lambda: client.set_tag(run_id, k, str(v)), "set_tag")


def log_study_totals(uri: str, experiment_id: str, name: str, totals) -> str:
    """One ``study`` run per experiment with the cost totals of every finished trial, the prune stage included.

    ``totals(rows, prefix)`` sums the costs (squeeze.driver.sweep.cost_totals); the prune stage's share shows
    what leaving it out would hide (the paper found up to +342%).
    """
    client = mlflow_client(uri)
    trials = client.search_runs([experiment_id], f"tags.`{TRIAL_TAG}` != '' and attributes.status = 'FINISHED'",
                                max_results=50000)
    rows = [r.data.metrics for r in trials]
    prune = [r.data.metrics for r in trials if _pretraining(r.data.tags)]
    metrics = {**totals(rows, "study/"), **totals(prune, "study/prune/"), "study/trials": len(rows)}
    for key in ("time/train_s", "energy/total_kwh"):
        whole = metrics[f"study/{key}"]
        metrics[f"study/prune_share/{key}"] = metrics[f"study/prune/{key}"] / whole if whole and whole == whole else float("nan")
    found = client.search_runs([experiment_id], "tags.`squeeze.study` = '1'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(experiment_id, run_name=f"{name}-study",
                                                                      tags={"squeeze.study": "1"}).info.run_id
    _log_metrics(client, run_id, {k: v for k, v in metrics.items()}, step=0)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_report(uri: str, experiment: str, directory: str | Path) -> str:
    """Attach a report folder to the experiment's study run (created if the study never ran)."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], "tags.`squeeze.study` = '1'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(
        exp.experiment_id, run_name=f"{experiment}-study", tags={"squeeze.study": "1"}).info.run_id
    _retry(lambda: client.log_artifacts(run_id, str(directory), "report"), "log_artifacts")
    if not found:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def _pretraining(tags: dict) -> bool:
    """A trial of the prune stage: its task is pre-training (the tag every trial carries; a run from before the tag
    by its technique)."""
    if PRETRAINING_TAG in tags:
        return tags[PRETRAINING_TAG] == "1"
    return "imp_prune" in tags.get("technique", "")
