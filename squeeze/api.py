"""The Python API: what ``squeeze sweep`` and ``squeeze study`` do, from a notebook, returning the results as data.

    import squeeze
    df = squeeze.study("sweeps/quickstart.yaml", overrides=["train.epochs=1"])   # the load_runs frame
    df = squeeze.study({"experiment": "nb", "sweeps": [{...}]}, tracking_uri="sqlite:///nb.db")
    df.groupby("technique")["test/accuracy"].max()

The command line calls the same ``run`` (so both validate, resume and stop the same way); the frame is
``analysis.runs.load_runs(experiment, tracking_uri)``: one row per trial of the experiment, the latest parent of
each stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """What one ``sweep``/``study`` call did: the validated config, the tracking URI it used, the stage outcomes
    (``squeeze.driver.sweep.SweepOutcome``) and the notes the overrides produced."""

    cfg: Any
    tracking_uri: str
    outcomes: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed_trials(self) -> int:
        return sum(o.errors for o in self.outcomes)


def load_config(source: str | os.PathLike | dict, overrides: list[str] | None = None, notes: list[str] | None = None):
    """A sweep file's path, or the same document as a dict, validated (``squeeze.config``).

    Raises:
        squeeze.config.ConfigError: naming the field and what is allowed.
    """
    from squeeze import config

    if isinstance(overrides, (str, bytes)):  # list() would read it character by character
        raise config.ConfigError(f"overrides: expected a list of key=value strings, got the string {overrides!r}")
    if isinstance(source, dict):
        raw = config.apply_overrides(dict(source), list(overrides or []), notes)
        return config.parse(raw, "<dict>")
    if not isinstance(source, (str, os.PathLike)):
        raise config.ConfigError(f"expected a sweep file's path or the document as a dict, got {type(source).__name__}")
    return config.load(Path(source), list(overrides or []), notes)


def run(source: str | os.PathLike | dict, *, overrides: list[str] | None = None, tracking_uri: str | None = None,
        study: bool = True, force: bool = False, only: list[str] | None = None, resume: bool = False,
        dry_run: bool = False, sequential: bool = False, retry_failed: bool = False) -> Run:
    """Validate, then run the file's stages: ``study`` skips complete stages and continues incomplete ones (as
    ``squeeze study``); ``study=False`` runs every stage afresh (``squeeze sweep``; ``resume`` continues).

    Raises:
        squeeze.config.ConfigError, squeeze.tracking.TrackingError, squeeze.data.errors.DataError: bad input,
            before any trial and before Ray starts.
        squeeze.driver.stage.Interrupted: Ctrl-C or SIGTERM stopped trials (their runs are KILLED; a next call resumes).
    """
    from squeeze.driver import sweep as sweeps
    from squeeze.tracking import resolve_uri

    import sys

    notes: list[str] = []
    cfg = load_config(source, overrides, notes)
    for note in notes:  # before the run, as they concern what it will do
        print(f"note: {note}", file=sys.stderr)
    uri = resolve_uri(tracking_uri, cfg.tracking_uri)
    outcomes = sweeps.run(cfg, tracking_uri=uri, only=only, resume=resume, skip_complete=study and not force,
                          dry_run=dry_run, sequential=sequential, retry_failed=retry_failed)
    return Run(cfg, uri, outcomes, notes)


def _frame(result: Run):
    from analysis.runs import load_runs

    return load_runs(result.cfg.experiment, tracking_uri=result.tracking_uri)


def study(source: str | os.PathLike | dict, *, overrides: list[str] | None = None, tracking_uri: str | None = None,
          **options):
    """Run a study (``squeeze study``) and return its trials as ``analysis.runs.load_runs`` gives them.

    Args:
        source: a sweep file's path, or its document as a dict.
        overrides: ``key=value`` strings, as on the command line (``train.epochs=1``, ``sweeps.ner.data.size=200``).
        tracking_uri: the MLflow store (default: the file's ``tracking_uri``, ``MLFLOW_TRACKING_URI``, ./mlflow.db).
        **options: ``force``, ``only``, ``sequential``, ``retry_failed`` (see ``run``).

    Returns:
        pandas.DataFrame: one row per trial of the experiment.
    """
    return _frame(run(source, overrides=overrides, tracking_uri=tracking_uri, study=True, **options))


def sweep(source: str | os.PathLike | dict, *, overrides: list[str] | None = None, tracking_uri: str | None = None,
          **options):
    """Run every stage of the file afresh (``squeeze sweep``; ``resume=True`` continues an interrupted one) and
    return the experiment's trials as ``analysis.runs.load_runs`` gives them."""
    return _frame(run(source, overrides=overrides, tracking_uri=tracking_uri, study=False, **options))
