"""The ``squeeze`` command line.

    squeeze sweep sweeps/quickstart.yaml            # run every sweep in the file
    squeeze study sweeps/quickstart.yaml            # same, skipping sweeps already complete in MLflow
    squeeze sweep FILE --dry-run train.epochs=1     # validate, load and tokenize; start nothing
    squeeze ls --experiment quickstart              # the runs as a pandas table
    squeeze report --experiment quickstart          # Table 4, costs, EVP and Pareto plots -> reports/
    squeeze ui                                      # MLflow UI on http://127.0.0.1:5000
    squeeze export runs:/<run id>/model out/        # a weight-only or fp8 model as compressed-tensors (vLLM, HF)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _output(p: argparse.ArgumentParser) -> None:
    """--verbose / --quiet after the command as well as before it."""
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="Ray's tables and the trials' logs")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="only errors and the final results")


def _common(p: argparse.ArgumentParser) -> None:
    _output(p)
    p.add_argument("file", help="sweep YAML")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=1 sweeps.0.data.size=200")
    p.add_argument("--dry-run", action="store_true", help="validate, load and tokenize the data; run nothing")
    p.add_argument("--only", action="append", metavar="SWEEP", help="run only this sweep (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run: only the trials without a "
                                                         "finished MLflow run")
    p.add_argument("--retry-failed", action="store_true", help="run again the trials whose own code raised an error "
                                                               "(by default they are reported, not re-run)")
    p.add_argument("--sequential", action="store_true", help="run the stages one at a time in file order (default: "
                                                             "as a DAG, independent stages at once)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")


def _parser() -> argparse.ArgumentParser:
    from squeeze import __version__

    parser = argparse.ArgumentParser(prog="squeeze", description="Measure the best way to compress a model for a task.")
    parser.add_argument("--version", action="version", version=f"squeeze {__version__}")
    parser.add_argument("--verbose", action="store_true", help="Ray Tune's progress tables and the trials' own logs")
    parser.add_argument("--quiet", action="store_true", help="only errors and the final results")
    sub = parser.add_subparsers(dest="command", required=True)
    _common(sub.add_parser("sweep", help="run the sweeps of a file"))
    study = sub.add_parser("study", help="run a study: sweeps in order, skipping those already complete")
    _common(study)
    study.add_argument("--force", action="store_true", help="run complete sweeps again")
    ls = sub.add_parser("ls", help="list an experiment's trials")
    _output(ls)
    ls.add_argument("--experiment", required=True)
    ls.add_argument("--tracking-uri")
    ls.add_argument("--parquet", help="also write the table to this Parquet file")
    ls.add_argument("--task", help="only this task's trials (default: one table per task)")
    rep = sub.add_parser("report", help="tables, plots and a recommendation for an experiment, logged to MLflow")
    _output(rep)
    rep.add_argument("--experiment", required=True)
    rep.add_argument("--out", help="folder (default: reports/EXPERIMENT)")
    rep.add_argument("--tracking-uri")
    ex = sub.add_parser("export", help="write a trial's model as compressed-tensors (transformers and vLLM load it)")
    _output(ex)
    ex.add_argument("model", help="a model folder squeeze saved, or an MLflow URI (runs:/<run id>/model, models:/...)")
    ex.add_argument("out", help="the folder to write (new or empty)")
    ex.add_argument("--tracking-uri", help="for an MLflow URI (default: sqlite:///mlflow.db here)")
    ui = sub.add_parser("ui", help="serve the MLflow UI (127.0.0.1 unless --host)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", default=5000, type=_port)
    ui.add_argument("--tracking-uri")
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port {text!r}: a TCP port is a whole number from 1 to 65535")
    return port


def _writable_here() -> None:
    """The default stores (mlflow.db, ray_results, .squeeze_cache) live in the working folder."""
    from squeeze.config import ConfigError

    if not os.access(os.getcwd(), os.W_OK):
        raise ConfigError(f"the working folder {os.getcwd()} is not writable: squeeze keeps mlflow.db, ray_results and "
                          "its cache there by default; run from a folder you can write, or set tracking_uri, "
                          "storage_path and cache_dir")


def _out_folder(path: str, flag: str):
    """A folder a command writes into, created now so a bad path fails before the work."""
    from pathlib import Path

    from squeeze.config import ConfigError
    from squeeze.folders import why_unwritable

    why = why_unwritable(path)
    if why:
        raise ConfigError(f"{flag} {path}: {why}")
    return Path(path)


def _run(args) -> int:
    import pandas as pd

    from squeeze import api

    _writable_here()
    result = api.run(args.file, overrides=args.overrides, tracking_uri=args.tracking_uri,
                     study=args.command == "study", force=getattr(args, "force", False), only=args.only,
                     resume=args.resume, dry_run=args.dry_run, sequential=args.sequential, retry_failed=args.retry_failed)
    if args.dry_run:
        print(f"{args.file}: valid; {len(result.outcomes)} sweep(s) prepared")
    tables = [o.table for o in result.outcomes if len(o.table)]
    if tables:
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(pd.concat(tables, ignore_index=True).to_string(index=False))
    return 1 if result.failed_trials else 0


def _out_file(path: str, flag: str) -> None:
    """A file a command will write, tried now (its folder made, the file opened for writing, and left as it was)
    so that a path that cannot be written fails before the work."""
    from squeeze.config import ConfigError

    _out_folder(os.path.dirname(os.path.abspath(path)), flag)
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: is a folder; name a file")
    existed = os.path.exists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot be written ({exc.strerror or exc})") from None
    if not existed:
        os.remove(path)


def _ls(args) -> int:
    import pandas as pd

    from analysis.runs import load_runs
    from squeeze.tracking import require_store, resolve_uri

    uri = resolve_uri(args.tracking_uri)
    if args.parquet:
        _out_file(args.parquet, "--parquet")
    require_store(uri)
    df = load_runs(args.experiment, tracking_uri=uri)
    if args.task:
        if len(df) and args.task not in set(df["task"]):
            raise ValueError(f"--task {args.task}: experiment {args.experiment!r} has tasks {sorted(set(df['task']))}")
        df = df[df["task"] == args.task] if len(df) else df
    if args.parquet:
        df.to_parquet(args.parquet)
    if not len(df):
        print(f"experiment {args.experiment!r}: no trial runs")
        return 0
    for task, part in df.groupby("task", sort=True):  # one table a task: its own metrics, no other task's NaNs
        cols = [c for c in part.columns if c in ("sweep", "technique", "model", "lr", "seed", "status")
                or c.startswith(("val/", "test/"))]
        cols = [c for c in cols if part[c].notna().any()]
        with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.4f}".format):
            print(f"task {task} ({len(part)} trials)\n{part[cols].to_string(index=False)}\n")
    return 0


def _report(args) -> int:
    from analysis import report
    from squeeze.tracking import log_report, require_store, resolve_uri

    uri = resolve_uri(args.tracking_uri)
    folder = _out_folder(args.out or f"reports/{args.experiment}", "--out")
    require_store(uri)
    out = report.build(args.experiment, folder, uri)
    run_id = log_report(uri, args.experiment, out)
    report.print_table4(out)
    print(f"\nreport: {out / 'report.md'} (logged to MLflow run {run_id})")
    return 0


def _export(args) -> int:
    """A weight-only (RTN, GPTQ) or fp8 model as compressed-tensors, checked by reloading it through transformers."""
    from pathlib import Path

    from squeeze.config import ConfigError

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"export: {out} exists and is not an empty folder; name a new one (nothing is overwritten)")
    source = args.model
    if ":/" in source:
        import mlflow

        from squeeze.tracking import require_store, resolve_uri

        uri = resolve_uri(args.tracking_uri)
        require_store(uri)
        mlflow.set_tracking_uri(uri)
        try:
            source = mlflow.artifacts.download_artifacts(artifact_uri=source)
        except Exception as exc:  # an unknown run or artifact: MlflowException / OSError, said plainly
            raise ConfigError(f"export: {args.model}: cannot be downloaded from {uri} ({type(exc).__name__})") from None
    elif not Path(source).is_dir():
        raise ConfigError(f"export: {source}: no such folder (a trial's model folder, or runs:/<run id>/model)")
    try:
        from squeeze.formats import compressed_tensors
        import compressed_tensors as _  # noqa: F401
    except ImportError:
        raise ConfigError("export: the compressed-tensors package is not installed: pip install compressed-tensors "
                          "(or squeeze's [compressed-tensors] extra)") from None
    import shutil

    _out_folder(str(out.parent if str(out.parent) else "."), "export")
    partial = out.parent / f".{out.name}.partial"  # an export that fails its check leaves nothing behind
    shutil.rmtree(partial, ignore_errors=True)
    try:
        compressed_tensors.export(source, partial)
    except ValueError as exc:  # NotExportable, or a folder squeeze did not write
        shutil.rmtree(partial, ignore_errors=True)
        raise ConfigError(f"export: {exc}") from None
    if out.exists():
        out.rmdir()  # empty, checked above
    written = partial.rename(out)
    fmt = __import__("json").loads((written / "config.json").read_text())["quantization_config"]["format"]
    print(f"wrote {written} (compressed-tensors {fmt}); it reloads through transformers to the model's logits")
    return 0


def ui_command(args) -> list[str]:
    """The MLflow UI command line; it binds 127.0.0.1 unless --host says otherwise."""
    from squeeze.tracking import resolve_uri

    uri = resolve_uri(args.tracking_uri)
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]


def _ui(args) -> int:
    """Start the MLflow UI, say when it answers (it can take a minute on a busy machine), and serve until Ctrl-C."""
    import socket
    import subprocess
    import time

    from squeeze.tracking import mask_secrets, mlflow_client

    cmd = ui_command(args)
    with socket.socket() as probe:
        if probe.connect_ex((args.host, args.port)) == 0:
            raise ValueError(f"--port {args.port}: something already listens on {args.host}:{args.port}; "
                             "pick another port")
    mlflow_client(cmd[5])  # create or migrate a local store under its lock, not racing a sweep that starts
    proc = subprocess.Popen(cmd)
    url = f"http://{args.host}:{args.port}"
    print(f"waiting for the MLflow UI at {url} (store: {mask_secrets(cmd[5])}) ...", file=sys.stderr, flush=True)
    started = time.time()
    try:
        while proc.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex((args.host, args.port)) == 0:
                    print(f"ready at {url} after {time.time() - started:.0f} s (Ctrl-C stops it)", flush=True)
                    return proc.wait()
            time.sleep(0.5)
        print(f"error: the MLflow UI exited with code {proc.returncode} before it answered", file=sys.stderr)
        return proc.returncode or 1
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        return EXIT_INTERRUPTED


def _sigterm_as_sigint(signum, frame) -> None:
    """SIGTERM (a scheduler, `kill`) stops a sweep the way Ctrl-C does: trials stop, nothing counts as complete.

    A process started in the background by a shell (``nohup squeeze study ... &``) inherits SIGINT *ignored*; raising
    SIGINT there would do nothing and SIGTERM would be swallowed, so the KeyboardInterrupt is raised directly unless
    SIGINT has a handler of its own."""
    import signal

    from squeeze.driver import dag

    dag.SIGNALLED.set()  # seen at the driver's next safe point should Python drop the KeyboardInterrupt below
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    from squeeze.checkpoint import CheckpointError
    from squeeze.config import ConfigError
    from squeeze.data.errors import DataError
    from squeeze.driver.stage import Interrupted, StageBusy, StorageTampered
    from squeeze.tracking import TrackingError

    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # overrides may follow options: FILE --dry-run a=1
    if extra and (args.command not in ("sweep", "study") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    from squeeze import console

    console.set_level("verbose" if args.verbose else "quiet" if args.quiet else "normal")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("ray", "ray.tune", "ray.train", "mlflow", "transformers", "datasets", "alembic"):
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.ERROR)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard copies of what MLflow has
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter prints nothing at verbose 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    try:
        if args.command in ("sweep", "study"):
            return _run(args)
        return {"ls": _ls, "report": _report, "ui": _ui, "export": _export}[args.command](args)
    except (ConfigError, DataError, CheckpointError, TrackingError, StageBusy, StorageTampered) as exc:
        from squeeze.tracking import mask_secrets

        print(f"error: {mask_secrets(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:  # ls, report, ui: an experiment that does not exist or has no runs, a busy port
        if args.command not in ("ls", "report", "ui"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"interrupted: {exc or 'stopped before the end'}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
