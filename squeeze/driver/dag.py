"""A study's stages as a DAG: each starts as soon as its sources are complete, and independent stages run at
the same time, their trials sharing the cluster under one resource budget (Ray schedules them all).

Each running stage is a driver thread running its own ``Tuner`` (``sweep.run_one``); a stage whose source
failed is skipped with the reason, the others go on. Ctrl-C or SIGTERM (handled as SIGINT) sets one event that
every stage's Tune loop watches (``share_interrupt``): all trials stop, and every unfinished stage is recorded as
interrupted, never complete. ``schedule: sequential`` (or ``--sequential``) runs the stages one at a time in
file order, as before; both give the same trials, seeds and metrics.
"""

from __future__ import annotations

import queue
import threading
import time

from squeeze import console

STOP = threading.Event()  # set by the driver on Ctrl-C; every stage's Tune loop watches it
# set by the CLI's SIGTERM handler before it raises KeyboardInterrupt: an exception raised while a finalizer or a GC
# callback runs is printed and dropped by Python ("Exception ignored in ..."), so the driver also looks for this
# flag where it can stop safely (the stage loop below, each model of a latency pass) and raises there
SIGNALLED = threading.Event()
HISTORY: list[tuple[str, str]] = []  # the last run's scheduling decisions, in order: ("start" | "end", stage)


def check_signalled() -> None:
    """Raise the KeyboardInterrupt a SIGTERM asked for, if Python dropped the one the handler raised."""
    if SIGNALLED.is_set():
        raise KeyboardInterrupt


def share_interrupt() -> None:
    """Give every Tune loop started from a stage thread the driver's ``STOP`` event as its "interrupted" event.

    Tune installs its graceful Ctrl-C handler only in the main thread; in a stage thread it would never see the
    interrupt. With this, Ctrl-C takes Tune's own path: the loop ends, the experiment state is saved with its
    running and pending trials as they were, and ``Tuner.restore`` continues exactly those (a ``Stopper`` would
    instead mark them terminated and end the search, losing the trials not yet started).
    """
    import importlib

    tune_module = importlib.import_module("ray.tune.tune")
    if getattr(tune_module, "_squeeze_shared", False):
        return
    original = tune_module._setup_signal_catching

    def setup():
        return original() if threading.current_thread() is threading.main_thread() else STOP

    tune_module._setup_signal_catching = setup
    tune_module._squeeze_shared = True


_REGISTRY_LOCK = threading.RLock()


def thread_safe_tune_registry() -> None:
    """Ray Tune's trainable registry iterates a dict that another Tuner may be filling (``RuntimeError: dictionary
    changed size during iteration`` with two Tuners starting at once, Ray 2.60): serialise its methods."""
    from ray.tune import registry

    if getattr(registry._Registry, "_squeeze_locked", False):
        return
    for name in ("register", "flush_values", "contains", "get"):
        original = getattr(registry._Registry, name)

        def locked(self, *args, _original=original, **kwargs):
            with _REGISTRY_LOCK:
                return _original(self, *args, **kwargs)

        setattr(registry._Registry, name, locked)
    registry._Registry._squeeze_locked = True


def dependencies(sweeps) -> dict[str, set[str]]:
    """The stages each stage waits for (its source, when that stage runs in this command)."""
    names = {s.name for s in sweeps}
    return {s.name: ({s.source.sweep} & names) if s.source else set() for s in sweeps}


def run(sweeps, run_stage, *, sequential: bool = False) -> dict:
    """Run ``run_stage(sweep)`` for every stage, each once its dependencies finished; returns name -> outcome or the
    exception the stage raised. Raises the first ``Interrupted``/``KeyboardInterrupt`` after every stage stopped."""
    from squeeze.driver.stage import Interrupted

    deps, order = dependencies(sweeps), [s.name for s in sweeps]
    by_name = {s.name: s for s in sweeps}
    outcomes: dict = {}
    HISTORY.clear()
    if sequential:
        for name in order:
            failed = [d for d in deps[name] if isinstance(outcomes.get(d), BaseException)]
            HISTORY.append(("start", name))
            try:
                outcomes[name] = _skipped(name, failed) if failed else run_stage(by_name[name])
            except (Interrupted, KeyboardInterrupt):
                raise
            except Exception as exc:  # recorded for its dependents; the others go on
                outcomes[name] = exc
            HISTORY.append(("end", name))
        return outcomes
    STOP.clear()
    share_interrupt()
    thread_safe_tune_registry()
    done: queue.Queue = queue.Queue()
    running: dict[str, threading.Thread] = {}

    def work(name):
        try:
            done.put((name, run_stage(by_name[name])))
        except BaseException as exc:  # recorded for its dependents; raised by the driver if it is an interrupt
            done.put((name, exc))

    try:
        while len(outcomes) < len(order):
            for name in order:
                if name in outcomes or name in running:
                    continue
                failed = [d for d in deps[name] if isinstance(outcomes.get(d), BaseException)]
                if failed:
                    outcomes[name] = _skipped(name, failed)
                elif all(d in outcomes for d in deps[name]):
                    running[name] = threading.Thread(target=work, args=(name,), name=f"stage-{name}", daemon=True)
                    HISTORY.append(("start", name))
                    running[name].start()
            while running and len(outcomes) < len(order):
                check_signalled()
                try:
                    name, result = done.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
                except queue.Empty:
                    continue
                running.pop(name).join()
                outcomes[name] = result
                HISTORY.append(("end", name))
                break
    except KeyboardInterrupt:
        STOP.set()
        console.say("interrupted: stopping every running stage's trials")
        deadline = time.time() + 300
        for t in running.values():
            t.join(timeout=max(1.0, deadline - time.time()))
        raise Interrupted("the study was interrupted; `squeeze study` finishes what was left") from None
    interrupted = [r for r in outcomes.values() if isinstance(r, (Interrupted, KeyboardInterrupt))]
    if interrupted:
        raise interrupted[0]
    return outcomes


def _skipped(name: str, failed: list[str]) -> RuntimeError:
    console.say(f"[{name}] skipped: its source {', '.join(failed)} failed")
    return RuntimeError(f"stage {name!r} not run: its source {', '.join(failed)} failed")
