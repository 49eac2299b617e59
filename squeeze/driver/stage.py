"""A stage of a study under its MLflow parent run: its identity, its lock, resuming it, and interrupts.

A stage's **identity** is its resolved config, a fingerprint of its prepared data (files, tokenizer, max
length) and the run ids of the source trials it starts from. A stage is complete only when a FINISHED parent
run of its current identity had every trial finish; when a baseline's grid grows, its trials change, so the
identity of every stage built on it changes too, and ``squeeze study`` runs them again.

A parent run holds a **lock** while its driver runs it: the driver's host and pid and a heartbeat tag refreshed
every 30 s. A second driver refuses to run the same stage while the lock is alive; a parent left RUNNING by a
driver that died (no live pid, no heartbeat) is closed as KILLED with its RUNNING trials, and ``squeeze study``
(or ``--resume``) **resumes** the newest incomplete parent of the same identity: MLflow, not Tune's files, says
what is done. The stage's points (``squeeze.driver.points``) that have a FINISHED run are not run again; a point whose
trial raised an error of its own (a NaN loss) is reported with its reason and run again only with
``--retry-failed``; a point that was interrupted or whose process died runs again, from the checkpoint its run
records (``squeeze.driver.point_store``). Tune's pickled state (``tuner.pkl``, experiment state, searcher state) is
never restored, so nothing planted in the storage folder runs. An interrupted stage (Ctrl-C, SIGTERM) is never
complete: its parent and unfinished trials are marked KILLED with the reason and the command exits 130.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from squeeze import tracking

log = logging.getLogger(__name__)
IDENTITY_TAG, LOCK_TAG, HEARTBEAT_TAG = "squeeze.stage_identity", "squeeze.lock", "squeeze.heartbeat"
HEARTBEAT_S, STALE_S = 30.0, 120.0


class StageBusy(RuntimeError):
    """Another driver is running this stage now."""


class StorageTampered(RuntimeError):
    """A checkpoint in the stage's storage is not what squeeze wrote there."""


class Interrupted(RuntimeError):
    """The stage was stopped before every trial finished (Ctrl-C, SIGTERM, a lost cluster)."""


def identity(sweep, data_key: str, sources: list[str] | None) -> str:
    """Hash of the resolved config, the prepared data's fingerprint and the source trials' run ids."""
    spec = {"config": sweep.model_dump(mode="json", exclude=_search_defaults(sweep)), "data": data_key,
            "sources": sorted(sources or [])}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _search_defaults(sweep) -> set[str]:
    """Left out of the identity: the budget (a larger one continues the same stage) and search settings at their
    defaults (a stage written before they existed keeps its identity)."""
    out = {"budget"}
    for name in ("search", "objectives", "constraints"):
        if name not in sweep.model_fields_set or getattr(sweep, name) == type(sweep).model_fields[name].get_default(
                call_default_factory=True):
            out.add(name)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(run) -> bool:
    """Is the driver that holds this RUNNING parent run alive? (same host: its pid; elsewhere: a fresh heartbeat)"""
    try:
        lock = json.loads(run.data.tags.get(LOCK_TAG, "{}"))
        beat = float(run.data.tags.get(HEARTBEAT_TAG, "0"))
    except ValueError:
        return False
    if not lock:
        return False
    if lock.get("host") == socket.gethostname():
        return _pid_alive(int(lock.get("pid", 0)))
    return time.time() - beat < STALE_S


@dataclass
class Stage:
    """The parent run a stage runs under, and whether its Tune experiment is resumed."""

    uri: str
    experiment_id: str
    parent_id: str
    resumed: bool
    _stop: threading.Event = field(default_factory=threading.Event)

    def hold(self) -> None:
        """Take the lock (host, pid) and keep its heartbeat fresh until ``release``."""
        client = tracking.mlflow_client(self.uri)
        client.set_tag(self.parent_id, LOCK_TAG, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))

        def beat():
            while True:
                try:
                    client.set_tag(self.parent_id, HEARTBEAT_TAG, f"{time.time():.0f}")
                except Exception as exc:  # the server may be away for a moment: the trials buffer, the lock waits
                    log.debug("heartbeat not sent: %s", exc)
                if self._stop.wait(HEARTBEAT_S):
                    return

        threading.Thread(target=beat, daemon=True, name="squeeze-heartbeat").start()

    def release(self) -> None:
        self._stop.set()
        tracking.mlflow_client(self.uri).set_tag(self.parent_id, LOCK_TAG, "{}")


def close_dead(uri: str, experiment_id: str, sweep: str) -> list:
    """Parents of ``sweep`` (newest first); refuses while one is held by a live driver, and closes as KILLED a
    RUNNING parent whose driver died, with its RUNNING trial runs.

    Raises:
        StageBusy: naming the driver that holds the stage.
    """
    parents = tracking.stage_parents(uri, experiment_id, sweep)
    for p in parents:
        if p.info.status != "RUNNING":
            continue
        if _alive(p):
            lock = json.loads(p.data.tags.get(LOCK_TAG, "{}"))
            raise StageBusy(f"stage {sweep!r} is being run by pid {lock.get('pid')} on {lock.get('host')} (MLflow run "
                            f"{p.info.run_id}); wait for it to end, or stop it, before running the stage again")
        tracking.close_run_tree(uri, experiment_id, p.info.run_id, "its driver stopped without closing it")
    return tracking.stage_parents(uri, experiment_id, sweep)


def reusable(parents: list, ident: str) -> str | None:
    """The newest parent of the same identity that is not complete (interrupted, dead, or with failed trials)."""
    for p in parents:
        if p.data.tags.get(IDENTITY_TAG) == ident and not complete([p], ident):
            return p.info.run_id
    return None


@dataclass
class Plan:
    """Which points of a stage run now."""

    todo: list
    finished: list
    failed: dict  # point key -> the error its trial raised (not run again without --retry-failed)


def plan(points: list[dict], runs: dict, retry_failed: bool = False) -> Plan:
    """Split ``points`` by the state of their trial runs (``tracking.trial_runs``)."""
    from squeeze.tracking import FAILURE_TAG

    todo, finished, failed = [], [], {}
    for p in points:
        run = runs.get(p["key"])
        status = run.info.status if run is not None else None
        if status == "FINISHED":
            finished.append(p)
        elif status == "FAILED" and run.data.tags.get(FAILURE_TAG) == "raised" and not retry_failed:
            failed[p["key"]] = run.data.tags.get("squeeze.error", "failed").strip().splitlines()[-1][:300]
        else:
            todo.append(p)
    return Plan(todo, finished, failed)


def complete(parents: list, ident: str) -> bool:
    return any(p.data.tags.get(IDENTITY_TAG) == ident and p.info.status == "FINISHED"
               and p.data.tags.get("squeeze.failed_trials") == "0" and p.data.tags.get("squeeze.not_run", "0") == "0"
               for p in parents)


def storage_dir(storage_path: str, experiment: str, sweep: str, ident: str) -> str:
    """The Tune experiment folder of one identity of a stage (a changed stage never restores an old one); a local
    path is made absolute on the driver, a URI (``s3://...``, ``gs://...``) is kept as it is."""
    name = f"{experiment}-{sweep}-{ident[:8]}"
    if "://" in storage_path:
        return storage_path.rstrip("/") + "/" + name
    return str(Path(storage_path).resolve() / name)


def unfinished(results) -> list:
    """Results of trials that neither finished (their last report carries ``parity/ok``) nor errored."""
    return [r for r in results if not r.error and "parity/ok" not in (r.metrics or {})]


def tune_name() -> str:
    """A fresh Tune experiment name for each driver's run of a stage (Tune's own files are never read back)."""
    return f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def drop_checkpoints(path: str) -> None:
    """After a stage: delete Tune's folders (never read back) and the checkpoints of points that finished; the
    checkpoints of points that did not finish stay for the next ``study``."""
    from squeeze.driver.point_store import clear_tune_folder

    clear_tune_folder(path)
