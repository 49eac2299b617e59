"""What a stage (and a study) may spend: trials started, trial-hours, kWh.

A meter counts what the stage's trials of earlier drivers spent (read from MLflow when the stage is planned) and
what this driver's trials spend; the searcher asks ``spent()`` before it starts each trial, so a running trial
always finishes and no trial starts once a limit is reached. A study's meter is shared by its stages (their
threads), each stage's meter adding to it.
"""

from __future__ import annotations

import math
import threading
import time


class Meter:
    def __init__(self, budget, where: str, parent: "Meter | None" = None):
        self.budget, self.where, self.parent = budget, where, parent
        self.trials, self.hours, self.kwh = 0, 0.0, 0.0
        self.unmeasured: str | None = None  # a finished trial with no energy figure (a kWh budget cannot be kept)
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()

    def __getstate__(self):  # Tune pickles its config (tuner.pkl, never read back by squeeze): no lock in it
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def add_finished(self, trials: int, hours: float, kwh: float, unmeasured: str | None = None) -> None:
        """Spent before this driver (or by a stage's own meter, for the study's)."""
        with self._lock:
            self.trials += trials
            self.hours += hours
            self.kwh += 0.0 if math.isnan(kwh) else kwh
            self.unmeasured = self.unmeasured or unmeasured
        if self.parent is not None:
            self.parent.add_finished(trials, hours, kwh, unmeasured)

    def start(self, key: str) -> None:
        with self._lock:
            self._running[key] = time.monotonic()
        if self.parent is not None:
            self.parent.start(f"{self.where}/{key}")

    def end(self, key: str, result: dict | None) -> None:
        with self._lock:
            began = self._running.pop(key, None)
        if began is None:
            return
        kwh = float((result or {}).get("energy/total_kwh", float("nan")))
        why = None if not math.isnan(kwh) else f"trial {key} measured no energy (no NVML or RAPL counters)"
        with self._lock:
            self.trials += 1
            self.hours += (time.monotonic() - began) / 3600
            self.kwh += 0.0 if math.isnan(kwh) else kwh
            self.unmeasured = self.unmeasured or why
        if self.parent is not None:
            self.parent.end(f"{self.where}/{key}", result)

    def spent(self) -> str | None:
        """Why no further trial may start, or None."""
        if self.parent is not None and (why := self.parent.spent()):
            return why
        if self.budget is None:
            return None
        with self._lock:
            now = time.monotonic()
            started = self.trials + len(self._running)
            hours = self.hours + sum(now - t for t in self._running.values()) / 3600
            b = self.budget
            if b.trials is not None and started >= b.trials:
                return f"{self.where} budget of {b.trials} trials spent ({started} started)"
            if b.hours is not None and hours >= b.hours:
                return f"{self.where} budget of {b.hours:g} trial-hours spent ({hours:.3f} h)"
            if b.kwh is not None and self.unmeasured:
                return f"{self.where} budget of {b.kwh:g} kWh cannot be kept: {self.unmeasured}"
            if b.kwh is not None and self.kwh >= b.kwh:
                return f"{self.where} budget of {b.kwh:g} kWh spent ({self.kwh:.4f} kWh)"
        return None


def spent_before(runs: list) -> tuple[int, float, float, str | None]:
    """Trials, trial-hours and kWh of a stage's trial runs that ended (MLflow runs): a trial counts once it finished
    or failed (an interrupted one runs again and counts then); its hours count whatever its end."""
    ended = [r for r in runs if r.info.status != "RUNNING" and r.info.end_time]
    hours = sum((r.info.end_time - r.info.start_time) / 3.6e6 for r in ended)
    done = [r for r in ended if r.info.status in ("FINISHED", "FAILED")]
    kwh = {r.info.run_id: r.data.metrics.get("energy/total_kwh", float("nan")) for r in done if r.info.status == "FINISHED"}
    missing = next((k for k, v in kwh.items() if math.isnan(v)), None)
    return len(done), hours, float(sum(v for v in kwh.values() if not math.isnan(v))), (
        f"trial run {missing} measured no energy (no NVML or RAPL counters)" if missing else None)
