"""Builds and runs the Ray Tune sweeps of a file: the only Ray Tune setup.

Order of work, so that bad input is caught before any trial starts:
validate the YAML -> check the tracking server -> load and tokenize every sweep's data ->
start Ray and check the resources -> one ``Tuner`` per sweep, each under an MLflow parent run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from squeeze import console, tracking
from squeeze.driver import dag
from squeeze.config import ConfigError, RunCfg, SweepCfg
from squeeze.prepare import Prepared, prepare, shared_tokenizers
from squeeze.registry import get_task
from squeeze.driver.search.budget import Meter
from squeeze.driver.search.build import build_search
from squeeze.driver.search import alternatives
from squeeze.driver.search_space import param_space

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    sweep: str
    parent_run_id: str | None
    table: pd.DataFrame
    errors: int
    skipped: bool = False
    finish: object = None  # set while the stage's latency pass and closing are still to run (``defer_finish``)


def init_ray() -> None:
    """Join ``RAY_ADDRESS`` when set (``auto``: the cluster running on this machine), else start a private local Ray
    without the dashboard, every server of it on 127.0.0.1: never a cluster that a ``ray start`` on this machine
    happens to run. Ray's token file is made private (0600), and the driver's SIGTERM handler is put back after
    Ray installed its own (which aborts the driver: parents would stay RUNNING)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    verbose = console.level() >= 2  # the trials' own log lines only with --verbose
    handler = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        if address:
            ray.init(address=address, log_to_driver=verbose)
        else:
            _private_local_ray(verbose)
    finally:
        _private_token()
        if callable(handler):
            signal.signal(signal.SIGTERM, handler)


def _private_local_ray(verbose: bool) -> None:
    import ray
    from ray._private import ray_constants

    # Ray binds a node to its routable address unless it runs "without clusters" (its macOS/Windows mode): then the
    # node, its workers and agents listen on 127.0.0.1 only; the worker processes read the same switch
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    # Ray announces that a token it found in ~/.ray enables token auth for the private Ray (it stays enabled;
    # the notice is for --verbose)
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    before = notice.level
    notice.setLevel(logging.DEBUG if verbose else logging.ERROR)
    try:
        ray.init(address="local", include_dashboard=False, log_to_driver=verbose, configure_logging=False)
    finally:
        notice.setLevel(before)


def _private_token() -> None:
    """Ray writes its cluster token readable by everyone (0644): only its owner may read it."""
    for path in (Path.home() / ".ray" / "auth_token", os.environ.get("RAY_AUTH_TOKEN_PATH")):
        if path and Path(path).is_file():
            try:
                os.chmod(path, 0o600)
            except OSError as exc:
                log.warning("could not make Ray's token %s private: %s", path, exc)


def has_autoscaler() -> bool:
    """Does this Ray cluster have an autoscaler with node types to launch? Every Ray publishes an autoscaler
    status, but one started without an autoscaling config (a local Ray, `ray start` by hand) runs Ray's
    read-only provider, which names each node's type after the node itself."""
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(b"__autoscaling_status")
    if not raw:
        return False
    mapping = (json.loads(raw).get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return any(kind != f"node_{node}" for node, kind in mapping.items())


def check_resources(cfg: RunCfg) -> None:
    """Refuse trials the cluster can never place, naming the field. A cluster with an autoscaler (its status in
    the GCS) is trusted to add the nodes the trials ask for: Ray knows its node types, the driver does not.

    Raises:
        ConfigError: when a trial asks for more CPUs or GPUs than a cluster without an autoscaler has.
    """
    import ray

    have = ray.cluster_resources()
    if has_autoscaler():
        console.say(f"autoscaling cluster: {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs up now; "
                    "its autoscaler adds nodes for the trials")
        return
    for i, s in enumerate(cfg.sweeps):
        for field, key in (("cpu", "CPU"), ("gpu", "GPU")):
            want = getattr(s.resources, field)
            if want > have.get(key, 0):
                raise ConfigError(f"sweeps.{i}.resources.{field}: a trial asks for {want} {key}, "
                                  f"the Ray cluster has {have.get(key, 0):g}")


def _trainable(sweep: SweepCfg, prepared: Prepared, ctx):
    from ray import tune

    from squeeze.driver.trial import run_trial

    resources = {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(run_trial, prepared=prepared, context=ctx), resources)
    # Tune registers a trainable under its name, one entry per driver: stages running at once under the shared name
    # "run_trial" would each start trials with whichever stage's data and MLflow parent was registered last
    trainable._name = f"squeeze-{sweep.name}"
    return trainable


def count_trials(space, num_samples: int = 1) -> int:
    """Trials a Tune param space makes: ``num_samples`` times the product of its grid sizes."""
    from squeeze.driver.points import grid_size

    return num_samples * grid_size(space)


def build_tuner(cfg: RunCfg, sweep: SweepCfg, prepared: Prepared, ctx, path: str, search, total: int = 0):
    """The Tuner of one stage: ``search`` (``squeeze.driver.search.build.StageSearch``) hands out its points and stops
    trials early; ``path`` is the stage's storage folder (``stage.storage_dir``), where each driver's Tune run
    gets a fresh folder of its own."""
    from ray import tune

    from squeeze.driver import stage

    task = get_task(sweep.task)
    first = sweep.objective_list()[0]
    trainable = _trainable(sweep, prepared, ctx)
    tune_config = tune.TuneConfig(metric=first.metric, mode=first.mode, num_samples=search.num_samples,
                                  search_alg=search.searcher, scheduler=search.scheduler,
                                  max_concurrent_trials=cfg.max_concurrent_trials or None,
                                  reuse_actors=True)  # warm workers: no re-import of torch/transformers per trial
    run_config = tune.RunConfig(
        name=stage.tune_name(), storage_path=path, verbose=1 if console.level() >= 2 else 0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # squeeze keeps its own (point_store)
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        callbacks=[tracking.trial_status_callback(ctx.tracking_uri, ctx.experiment_id, ctx.parent_id),
                   console.trial_lines(sweep.name, task.primary_metric, sweep.train.epochs,
                                       total=total or search.num_samples, max_steps=sweep.train.max_steps)])
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def results_table(results, sweep: SweepCfg) -> pd.DataFrame:
    """One row per trial: sampled hyperparameters, best dev and test primary metric, error."""
    task = get_task(sweep.task)
    rows = []
    for r in results:
        m, config = r.metrics or {}, (r.config or {}).get("point") or {}  # a trial a cluster cancelled has neither
        row = {"sweep": sweep.name, "trial": m.get("trial_id", "?")}
        row.update({k: v for k, v in (config.get("train") or {}).items()})
        row.update({f"{t}.{k}": v for t, ps in (config.get("params") or {}).items() for k, v in ps.items()})
        if config.get("source_run"):
            row["source_run"] = config["source_run"][:8]
        for split in ("val", "test"):
            row[f"{split}/{task.primary_metric}"] = m.get(f"{split}/{task.primary_metric}")
        row["time_total_s"] = m.get("time_total_s")
        row["status"] = "ERROR" if r.error else "OK" if "parity/ok" in m else "STOPPED"
        rows.append(row)
    return pd.DataFrame(rows)


def resolve_sources(cfg: RunCfg, sweep: SweepCfg, uri: str, experiment_id: str) -> list[str]:
    """Run ids of the source sweep's trials this sweep starts from (one trial per source run)."""
    src = sweep.source
    origin = next((s for s in cfg.sweeps if s.name == src.sweep), sweep)
    task = get_task(origin.task)
    return tracking.source_runs(uri, experiment_id, src.sweep, select=src.select, per=src.per,
                                metric=f"val/{task.primary_metric}", mode=task.mode)


def stage_points(sweep: SweepCfg, ident: str, sources: list[str] | None) -> list[dict]:
    """Every trial of the stage as an explicit point (``squeeze.driver.points``), the same on every driver."""
    from ray import tune

    from squeeze.driver.points import expand

    def space_of(sub: SweepCfg) -> dict:
        space = param_space(sub)
        if sources:
            space["source_run"] = tune.grid_search(sources)
        return space

    try:
        if alternatives.searched(sweep):
            out, asked = alternatives.points(sweep, ident, expand, space_of)
        else:
            space = space_of(sweep)
            out, asked = expand(space, sweep.num_samples, ident), count_trials(space, sweep.num_samples)
    except ValueError as exc:
        raise ConfigError(f"sweep {sweep.name!r}: {exc}") from None
    if len(out) < asked:  # a choice over few values drew the same point again: one trial, not a duplicate
        console.say(f"[{sweep.name}] {asked} samples drew {len(out)} distinct points: {len(out)} trials")
    return out


def _check_checkpoints(path: str, todo: list[dict], runs: dict) -> None:
    """Before any trial: every checkpoint a resumed point will load holds what squeeze recorded.

    Raises:
        stage.StorageTampered: naming the folder.
    """
    import json as _json

    from squeeze.driver.point_store import CHECKPOINT_TAG, CheckpointMismatch, PointStore
    from squeeze.driver.stage import StorageTampered

    for p in todo:
        run = runs.get(p["key"])
        raw = run.data.tags.get(CHECKPOINT_TAG) if run is not None else None
        if not raw:
            continue
        try:
            PointStore(path, p["key"]).load(_json.loads(raw))
        except FileNotFoundError:
            continue  # gone: that trial starts over (it says so in its run)
        except (CheckpointMismatch, ValueError) as exc:
            raise StorageTampered(f"{exc}") from None


def run_one(cfg: RunCfg, sweep: SweepCfg, prepared: Prepared | None, uri: str, experiment_id: str, *,
            resume: bool = False, skip_complete: bool = False, defer_finish: bool = False,
            retry_failed: bool = False, study_meter: Meter | None = None) -> SweepOutcome:
    """Run one stage under its MLflow parent run: skipped when complete (``skip_complete``), continued when an
    incomplete parent of the same identity exists (``resume`` or ``skip_complete``: only the points without a
    finished run, see ``stage.plan``), refused while another driver holds it.

    With ``defer_finish`` the stage's CPU latency pass and the closing of its parent run are left to the returned
    outcome's ``finish()`` (the DAG runs them once no trial of any stage runs, so latency is measured on an idle
    machine); the stage's trials are finished MLflow runs already, so its dependents can start.

    Raises:
        stage.StageBusy: another driver runs this stage now.
        stage.Interrupted: trials were left unfinished (Ctrl-C); their runs and the parent are marked KILLED.
    """
    from squeeze.driver import stage
    from squeeze.driver.trial import TrialContext

    sources = None
    cache = Path(cfg.cache_dir).resolve()
    if sweep.source is not None:
        sources = resolve_sources(cfg, sweep, uri, experiment_id)
        prepared = prepare(sweep, cache, tokenizer_dir=tracking.download_model(uri, sources[0], cache))
    ident = stage.identity(sweep, prepared.key, sources)
    parents = stage.close_dead(uri, experiment_id, sweep.name)
    if skip_complete and stage.complete(parents, ident):
        console.say(f"[{sweep.name}] already complete in MLflow: skipped (--force runs it again)")
        return SweepOutcome(sweep.name, None, pd.DataFrame(), 0, skipped=True)
    path = stage.storage_dir(cfg.storage_path, cfg.experiment, sweep.name, ident)
    points = stage_points(sweep, ident, sources) if sweep.search.algorithm in ("grid", "random") else []
    parent_id = stage.reusable(parents, ident) if resume or skip_complete else None
    if parent_id is not None:
        tracking.reopen(uri, parent_id)
    else:
        parent_id = _start_parent(sweep, prepared, uri, experiment_id, ident, sources)
        console.say(f"[{sweep.name}] {sweep.task} x {alternatives.label(sweep)} on {sweep.model.name}: "
                    f"MLflow run {parent_id}")
    st = stage.Stage(uri, experiment_id, parent_id, resumed=parent_id in {p.info.run_id for p in parents})
    st.hold()
    outcome = None
    try:
        runs = tracking.trial_runs(uri, experiment_id, parent_id)
        todo = stage.plan(points, runs, retry_failed)
        if st.resumed:
            console.say(f"[{sweep.name}] continuing MLflow run {parent_id}: {len(todo.finished)} of {len(points)} trials "
                        f"finished before, {len(todo.todo)} to run")
        for key, reason in todo.failed.items():
            console.say(f"[{sweep.name}] trial {key} failed before ({reason}): not run again (--retry-failed runs it)")
        _check_checkpoints(path, todo.todo, runs)
        ctx = TrialContext(sweep, uri, experiment_id, parent_id, str(cache), stage_dir=path,
                           checkpoints=cfg.checkpoints_to_keep)
        search = build_search(sweep, todo, runs, sources, meter=Meter(sweep.budget, f"sweep {sweep.name!r}", study_meter),
                              on_stop=lambda key, reason: tracking.mark_stopped(uri, experiment_id, parent_id, key, reason))
        _check_checkpoints(path, search.rerun, runs)  # an adaptive search's interrupted points run again
        results = build_tuner(cfg, sweep, prepared, ctx, path, search, total=search.planned).fit() if search.num_samples else []
        search.close_stopped(results, lambda key, reason, by: tracking.mark_stopped(uri, experiment_id, parent_id, key,
                                                                                  reason, close_by=by))
        left = [r for r in stage.unfinished(results) if not search.was_stopped(r)]
        if left:
            reason = f"interrupted with {len(left)} of {len(results)} trials unfinished"
            tracking.close_run_tree(uri, experiment_id, parent_id, reason)
            raise stage.Interrupted(f"sweep {sweep.name!r}: {reason}; `squeeze study` (or `squeeze sweep --resume`) "
                                    "finishes exactly those")
        table = results_table(results, sweep)
        runs = tracking.trial_runs(uri, experiment_id, parent_id)
        ended = search.tally(runs)
        if search.stopped_by:
            console.say(f"[{sweep.name}] {search.stopped_by}: {ended['not_run']} planned trials not started (a later "
                        "`squeeze study` with a larger budget runs them)")
        done = [r for r in runs.values() if r.info.status == "FINISHED"]
        errors = ended["failed"]
        summary = {"trials": ended["planned"], "trials_failed": errors, "trials_stopped_early": ended["stopped_early"],
                   "trials_not_run": ended["not_run"], **cost_totals([r.data.metrics for r in done], "sweep/")}
        closing_tags = {"squeeze.failed_trials": str(errors), "squeeze.not_run": str(ended["not_run"]),
                        **({"squeeze.budget": search.stopped_by} if search.stopped_by else {})}

        def finish(measure: bool = True):
            try:
                if not measure:
                    tracking.close_run_tree(uri, experiment_id, parent_id, "interrupted before its latency pass")
                    return
                latency_pass(sweep, prepared, uri, experiment_id, parent_id, ctx.cache_dir)
                tracking.finish_parent(uri, parent_id, summary, closing_tags,
                                       failed=errors > 0 and errors == ended["planned"])
                stage.drop_checkpoints(path)  # Tune's folders; points that did not finish keep their checkpoints
            except BaseException as exc:
                why = ("interrupted during its latency pass" if isinstance(exc, KeyboardInterrupt)
                       else f"its latency pass failed: {type(exc).__name__}: {exc}")
                tracking.close_run_tree(uri, experiment_id, parent_id, tracking.mask_secrets(why)[:2000])
                raise
            finally:
                st.release()

        outcome = SweepOutcome(sweep.name, parent_id, table, errors, finish=finish)
    finally:
        if outcome is None:
            st.release()
    if not defer_finish:
        outcome.finish()
        outcome.finish = None
    return outcome


def _start_parent(sweep: SweepCfg, prepared: Prepared, uri: str, experiment_id: str, ident: str, sources) -> str:
    from squeeze.provenance import git_commit
    from squeeze.driver.stage import IDENTITY_TAG

    text = yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False)
    return tracking.start_parent(uri, experiment_id, sweep.name, text, {
        **tracking.source_tags(), "task": sweep.task, "technique": alternatives.label(sweep), IDENTITY_TAG: ident,
        "squeeze.search": _search_tag(sweep, sources), "squeeze.scheduler": sweep.search.scheduler,
        "squeeze.objectives": json.dumps([o.model_dump() for o in sweep.objective_list()]),
        "squeeze.constraints": json.dumps([c.model_dump(exclude_none=True) for c in sweep.constraints]),
        "squeeze.git_commit": git_commit(), "data.name": prepared.data_name,
        **{f"data.n_{k}": str(v) for k, v in prepared.sizes.items()}})


def _search_tag(sweep: SweepCfg, sources) -> str:
    """How the stage's trials were drawn: only ``random`` draws are i.i.d. (what expected validation performance
    assumes)."""
    if sweep.search.algorithm in ("tpe", "nsga2"):
        return sweep.search.algorithm
    return "grid" if any("grid_search" in v for v in sweep.search_space.values()) or sources else "random"


def check_prepared(sweep: SweepCfg, prepared: Prepared) -> None:
    """Technique rules that need the data (a prune schedule's steps), for every searched value, before Ray starts.

    Raises:
        ConfigError: naming the sweep and the fix.
    """
    from squeeze.models import TINY
    from squeeze.registry import get_technique_class
    from squeeze.driver.search_space import points

    for t in sweep.technique:
        cls = get_technique_class(t)
        for train, params in points(sweep, t):
            try:
                cls.check_prepared(params, train, len(prepared.features["train"]), pretrained=sweep.model.name not in TINY)
            except ValueError as exc:
                raise ConfigError(f"sweep {sweep.name!r}: {exc}") from None


def latency_pass(sweep: SweepCfg, prepared: Prepared, uri: str, experiment_id: str, parent_id: str, cache: str) -> None:
    """CPU latency of every finished trial's saved model, measured here after the sweep, one model at a time with
    the CPU to itself (inside trials that share the CPU, two identical MiniLM baselines measured 23.9 vs 12.4 ms)."""
    from squeeze import formats, measure
    from squeeze.formats.onnx_int8 import example_batch

    if not sweep.measure.latency:
        return
    threads = sweep.train.num_threads or max(1, int(sweep.resources.cpu))
    todo = tracking.finished_children(uri, experiment_id, parent_id, without_tag="latency/cpu_measured")
    decodes = get_task(sweep.task).auto_class == "AutoModelForCausalLM" and sweep.measure.decode_tokens > 0
    for k, run_id in enumerate(todo, 1):  # a resumed stage measures only the models not measured before
        dag.check_signalled()
        console.say(f"[{sweep.name}] latency pass: model {k} of {len(todo)} (run {run_id[:8]})")
        model = formats.load(tracking.download_model(uri, run_id, cache))
        decoded = decode_speed(model, prepared, sweep, threads) if decodes else ({}, {})
        model, runtime = formats.of(model).serving(model, example_batch(prepared.features["test"][:2], prepared.pad_id))
        metrics, tags = measure.latency(model, prepared.features["test"], prepared.pad_id, device="cpu", threads=threads,
                                        batch_size=sweep.train.eval_batch_size, repeats=sweep.measure.latency_repeats,
                                        examples=sweep.measure.latency_examples)
        tracking.log_to_run(uri, run_id, {**metrics, **decoded[0]}, {
            **tags, **decoded[1], "latency/cpu_measured": "after the sweep, alone on the driver", "latency/runtime": runtime})


def decode_speed(model, prepared: Prepared, sweep: SweepCfg, threads: int) -> tuple[dict, dict]:
    """Decode tokens/s of a causal LM at batch 1 on the CPU, in the runtime its codec decodes with."""
    from squeeze import formats, measure

    n, m, repeats = sweep.measure.decode_tokens, sweep.measure.decode_prompt_tokens, 3
    prompt = [int(t) for t in prepared.features["test"][0]["input_ids"][:m]]
    decoder, line = formats.of(model).decoder(model, threads=threads)
    setting = (f"batch 1, greedy, {n} new tokens after a {len(prompt)}-token test prompt, {threads} threads, "
               f"median of {repeats}")
    if decoder is None:
        return {}, {"latency/decode_runtime": line}
    rate = measure.decode_rate(decoder, prompt, n, threads=threads, repeats=repeats)
    return {"latency/cpu_decode_tokens_per_s": rate["median"]}, {"latency/decode_runtime": line,
                                                                 "latency/decode_setting": setting}


def _say_counts(sweep: SweepCfg, prepared: Prepared) -> None:
    """``--dry-run``: each split's size with its label or entity counts (a file read in the wrong layout shows)."""
    task = get_task(sweep.task)
    for split, examples in prepared.examples.items():
        counts = task.split_summary(examples)
        detail = ", ".join(f"{k} {v:,}" for k, v in counts.items())
        print(f"[{sweep.name}] {split}: {len(examples):,} examples" + (f" ({detail})" if detail else ""), file=sys.stderr)


def _check_data(sweep: SweepCfg) -> None:
    from squeeze.data import load_splits

    task = get_task(sweep.task)
    task.labels(load_splits(task, sweep.data).splits)
    return None


COST_KEYS = ("energy/total_kwh", "energy/gpu_kwh", "energy/cpu_kwh", "co2/kg", "time/train_s", "time/eval_s")


def cost_totals(rows: list[dict], prefix: str) -> dict[str, float]:
    """Sums of the trials' costs; NaN when any trial's figure is unavailable (never a partial sum)."""
    out = {}
    for key in COST_KEYS:
        vals = [r.get(key) for r in rows if r.get(key) is not None]
        out[prefix + key] = float(sum(vals)) if vals else float("nan")
    return out


def plan(cfg: RunCfg, only: list[str] | None = None) -> list[SweepCfg]:
    names = [s.name for s in cfg.sweeps]
    for n in only or []:
        if n not in names:
            raise ConfigError(f"--only {n}: no such sweep; sweeps in this file: {', '.join(names)}")
    return [s for s in cfg.sweeps if not only or s.name in only]


def run(cfg: RunCfg, *, tracking_uri: str | None = None, only: list[str] | None = None, resume: bool = False,
        skip_complete: bool = False, dry_run: bool = False, sequential: bool = False,
        retry_failed: bool = False) -> list[SweepOutcome]:
    """Validate everything, then run the selected sweeps: each once its sources are complete (``squeeze.driver.dag``)."""
    from squeeze.driver import preflight

    sweeps = plan(cfg, only)
    uri = tracking.resolve_uri(tracking_uri, cfg.tracking_uri)
    tracking.check_reachable(uri)
    preflight.check_ray_address()
    preflight.writable_folder(cfg.cache_dir, "cache_dir")
    if "://" in cfg.storage_path:
        preflight.check_storage(cfg.storage_path)
    preflight.check(cfg, known_elsewhere=lambda name: tracking.finished_sweep_exists(uri, cfg.experiment, name))
    cache = Path(cfg.cache_dir).resolve()
    # data errors surface now; a sweep with a source is tokenized later, with its source's tokenizer
    shared = shared_tokenizers(cfg.sweeps, cache)  # tiny presets: one tokenizer for every stage of the study
    prepared = {s.name: prepare(s, cache, shared.get(s.name)) if s.source is None else _check_data(s) for s in sweeps}
    for s in sweeps:
        if prepared[s.name] is not None:
            check_prepared(s, prepared[s.name])
    if dry_run:
        for s in sweeps:
            if prepared[s.name] is not None:
                _say_counts(s, prepared[s.name])
        return [SweepOutcome(s.name, None, pd.DataFrame([{"sweep": s.name, **(prepared[s.name].sizes if prepared[s.name] else {})}]),
                             0, True) for s in sweeps]
    if "://" not in cfg.storage_path:
        preflight.check_storage(cfg.storage_path)  # a local folder, made now that the input is known good
    experiment_id = tracking.ensure_experiment(uri, cfg.experiment, cfg.artifact_location)
    init_ray()  # once, here: the stages' threads share it
    check_resources(cfg)
    sequential = sequential or cfg.schedule == "sequential"
    ran: dict[str, SweepOutcome] = {}
    study_meter = Meter(cfg.budget, "study") if cfg.budget is not None else None

    def run_stage(s: SweepCfg) -> SweepOutcome:
        ran[s.name] = run_one(cfg, s, prepared[s.name], uri, experiment_id, resume=resume, skip_complete=skip_complete,
                              defer_finish=not sequential, retry_failed=retry_failed, study_meter=study_meter)
        return ran[s.name]

    def close_all(measure: bool) -> None:
        for s in sweeps:
            if s.name in ran and ran[s.name].finish:
                finish, ran[s.name].finish = ran[s.name].finish, None
                finish(measure)

    try:
        results = dag.run(sweeps, run_stage, sequential=sequential)
    except BaseException:  # interrupted: no latency pass now; every open parent is closed KILLED with the reason
        close_all(measure=False)
        raise
    close_all(measure=True)  # every stage whose trials all ended closes, whatever another stage did
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    outcomes = [results[s.name] for s in sweeps]
    if skip_complete:
        tracking.log_study_totals(uri, experiment_id, cfg.experiment, cost_totals)
    return outcomes


class _CallableModule(type(sys)):
    """``squeeze.sweep(source, ...)`` is ``squeeze.api.sweep``: the Python API's name for ``squeeze sweep``, on the
    module that implements it."""

    def __call__(self, source, **kwargs):
        from squeeze import api

        return api.sweep(source, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
