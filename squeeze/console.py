"""What a sweep prints: a line per stage and per trial start, end or failure, instead of Ray's tables.

``--verbose`` brings back Ray Tune's own progress tables and the trials' log lines; ``--quiet`` prints only
errors and the final results table.
"""

from __future__ import annotations

import json
import os
import sys
import time

LEVELS = {"quiet": 0, "normal": 1, "verbose": 2}
# a trial's epoch line comes at most this often (seconds since its last line), so long epochs show progress and
# a study of short trials stays a line per start and finish
PROGRESS_EVERY_S = float(os.environ.get("SQUEEZE_PROGRESS_EVERY_S", "20"))
_level = 1


def set_level(name: str) -> None:
    global _level
    _level = LEVELS[name]


def level() -> int:
    return _level


def say(text: str) -> None:
    """A progress line (not in --quiet)."""
    if _level >= 1:
        print(text, file=sys.stderr, flush=True)


_PROGRESS_KEY = "squeeze:progress:{}"
_posted = [0.0]


def post_progress(trial_id: str, text: str) -> None:
    """Leave ``text`` where the driver's trial lines read it: the cluster's key-value store (GCS), one key per trial."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(_PROGRESS_KEY.format(trial_id).encode(), json.dumps([time.time(), text]).encode(), overwrite=True)


def progress(text: str, every_s: float = 2.0) -> None:
    """A long step's progress from inside a trial (the teacher cache, ...), at most every ``every_s`` seconds; the
    driver prints it as the trial's line (trials' own output reaches the console only with --verbose). Outside a
    Ray trial (a plain ``recipe`` run) it does nothing."""
    now = time.time()
    if now - _posted[0] < every_s:
        return
    _posted[0] = now
    import ray

    if not ray.is_initialized():
        return
    import warnings

    from ray import tune

    with warnings.catch_warnings():  # outside a trial Ray warns and answers None, which is the answer wanted here
        warnings.simplefilter("ignore")
        trial_id = tune.get_context().get_trial_id()
    if trial_id:
        post_progress(trial_id, text)


def describe(config: dict) -> str:
    """``lr=3e-05 seed=0 pkd.alpha=0.5``: the values this trial's search space gave it (a Tune config holds them
    under ``point``: see ``squeeze.driver.points``)."""
    config = config.get("point", config)
    parts = ["+".join(config["technique"])] if config.get("technique") else []  # a searched technique's recipe
    parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in (config.get("train") or {}).items()]
    parts += [f"{t.split(':')[-1]}.{k}={v}" for t, ps in (config.get("params") or {}).items() for k, v in ps.items()]
    if config.get("source_run"):
        parts.append(f"source={config['source_run'][:8]}")
    return " ".join(parts) or "defaults"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def trial_lines(stage: str, primary: str, epochs: int = 0, total: int = 0, max_steps: int = 0):
    """A Ray Tune callback printing one line when a trial starts, ends an epoch at least ``PROGRESS_EVERY_S`` after
    its last line (steps/s, the dev metric and an ETA), finishes or fails. ``epochs``: the sweep's, unless a trial's
    search space sets its own; ``total``: the stage's trial count (Tune's own list holds only the trials made so far);
    ``max_steps``: the sweep's step cap, which ends a trial before its last epoch (the ETA counts to it)."""
    from ray import tune

    class _Lines(tune.Callback):
        def __init__(self):
            self.started: dict[str, float] = {}
            self.said: dict[str, float] = {}
            self.seen: dict[str, float] = {}  # the time of the last progress post printed, per trial
            self.polled = 0.0
            self.count = 0

        def on_step_begin(self, iteration, trials, **info):
            """Print what running trials posted with ``progress`` (at most every PROGRESS_EVERY_S per trial)."""
            from ray.experimental.internal_kv import _internal_kv_get

            now = time.time()
            if now - self.polled < 1.0:
                return
            self.polled = now
            for trial in trials:
                if trial.status != "RUNNING" or now - self.said.get(trial.trial_id, self.started.get(
                        trial.trial_id, now)) < PROGRESS_EVERY_S:
                    continue
                raw = _internal_kv_get(_PROGRESS_KEY.format(trial.trial_id).encode())
                at, text = json.loads(raw) if raw else (0.0, "")
                if at > self.seen.get(trial.trial_id, 0.0):
                    self.seen[trial.trial_id] = at
                    self.said[trial.trial_id] = now
                    say(f"[{stage}] trial {trial.trial_id}: {text}")

        def _forget(self, trial):
            from ray.experimental.internal_kv import _internal_kv_del

            _internal_kv_del(_PROGRESS_KEY.format(trial.trial_id).encode())

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = time.time()
            n = total or len(trials)
            say(f"[{stage}] trial {trial.trial_id} started: {describe(trial.config)} ({n} trial{'s' if n != 1 else ''})")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            n_epochs = (trial.config.get("point", {}).get("train") or {}).get("epochs", epochs)
            epoch, step = result.get("epoch"), result.get("step")  # epoch: the 0-based index of the epoch just ended
            if not n_epochs or epoch is None or step is None or any(k.startswith("test/") for k in result):
                return  # post-training trials train no epochs; the final report is the "finished" line
            now = time.time()
            if now - self.said.get(trial.trial_id, self.started.get(trial.trial_id, now)) < PROGRESS_EVERY_S:
                return  # short epochs: the trial's start and finish lines say enough
            self.said[trial.trial_id] = now
            took, done = now - self.started.get(trial.trial_id, now), epoch + 1
            score = result.get(f"val/{primary}")
            cap = (trial.config.get("point", {}).get("train") or {}).get("max_steps", max_steps)
            last = min(cap, step / done * n_epochs) if cap else step / done * n_epochs  # the trial's final step
            say(f"[{stage}] trial {trial.trial_id} epoch {done}/{n_epochs}: step {step}, {step / max(took, 1e-9):.2f} steps/s"
                + (f", val/{primary} {score:.4g}" if isinstance(score, (int, float)) else "")
                + f", ETA {_duration(took / max(step, 1) * max(last - step, 0))}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._forget(trial)
            self.count += 1
            m = trial.last_result or {}
            score = m.get(f"test/{primary}")
            took = time.time() - self.started.get(trial.trial_id, time.time())
            ended = "finished" if "parity/ok" in m else f"stopped early after epoch {m.get('epochs_done', '?')}"
            say(f"[{stage}] trial {trial.trial_id} {ended} ({self.count}/{total or len(trials)}): "
                + (f"test/{primary} {score:.4g}, " if isinstance(score, (int, float)) else "") + f"{took:.0f} s")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._forget(trial)
            say(f"[{stage}] trial {trial.trial_id} FAILED: {describe(trial.config)} (see its MLflow run's squeeze.error)")

    return _Lines()
