"""What a sweep prints: a line per stage and per trial start, end or failure, instead of Ray's tables.

``--verbose`` brings back Ray Tune's own progress tables and the trials' log lines; ``--quiet`` prints only
errors and the final results table.
"""

from __future__ import annotations

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


def describe(config: dict) -> str:
    """``lr=3e-05 seed=0 pkd.alpha=0.5``: the values this trial's search space gave it."""
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in (config.get("train") or {}).items()]
    parts += [f"{t.split(':')[-1]}.{k}={v}" for t, ps in (config.get("params") or {}).items() for k, v in ps.items()]
    if config.get("source_run"):
        parts.append(f"source={config['source_run'][:8]}")
    return " ".join(parts) or "defaults"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def trial_lines(stage: str, primary: str, epochs: int = 0):
    """A Ray Tune callback printing one line when a trial starts, ends an epoch at least ``PROGRESS_EVERY_S`` after
    its last line (steps/s, the dev metric and an ETA), finishes or fails. ``epochs``: the sweep's, unless a trial's search space sets its own."""
    from ray import tune

    class _Lines(tune.Callback):
        def __init__(self):
            self.started: dict[str, float] = {}
            self.said: dict[str, float] = {}
            self.count = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = time.time()
            say(f"[{stage}] trial {trial.trial_id} started: {describe(trial.config)} ({len(trials)} trials)")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            total = (trial.config.get("train") or {}).get("epochs", epochs)
            epoch, step = result.get("epoch"), result.get("step")  # epoch: the 0-based index of the epoch just ended
            if not total or epoch is None or step is None or any(k.startswith("test/") for k in result):
                return  # post-training trials train no epochs; the final report is the "finished" line
            now = time.time()
            if now - self.said.get(trial.trial_id, self.started.get(trial.trial_id, now)) < PROGRESS_EVERY_S:
                return  # short epochs: the trial's start and finish lines say enough
            self.said[trial.trial_id] = now
            took, done = now - self.started.get(trial.trial_id, now), epoch + 1
            score = result.get(f"val/{primary}")
            say(f"[{stage}] trial {trial.trial_id} epoch {done}/{total}: step {step}, {step / max(took, 1e-9):.2f} steps/s"
                + (f", val/{primary} {score:.4g}" if isinstance(score, (int, float)) else "")
                + f", ETA {_duration(took / done * max(total - done, 0))}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.count += 1
            m = trial.last_result or {}
            score = m.get(f"test/{primary}")
            took = time.time() - self.started.get(trial.trial_id, time.time())
            say(f"[{stage}] trial {trial.trial_id} finished ({self.count}/{len(trials)}): "
                + (f"test/{primary} {score:.4g}, " if isinstance(score, (int, float)) else "") + f"{took:.0f} s")

        def on_trial_error(self, iteration, trials, trial, **info):
            say(f"[{stage}] trial {trial.trial_id} FAILED: {describe(trial.config)} (see its MLflow run's squeeze.error)")

    return _Lines()
