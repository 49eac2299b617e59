"""Legitimate input that used to be misread now does what a user expects (issue 22), checked on the values it yields."""

from __future__ import annotations

import pytest

from squeeze import cli, config, tracking
from squeeze.driver import points
from squeeze.data import load_splits
from squeeze.data.options import DataCfg

CSV = "text,label\n" + "".join(f"review number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))


def test_yaml_merge_keys_load_and_an_explicit_key_overrides_the_merged_one(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("experiment: m\nsweeps:\n"
                 "  - &base {name: a, task: sentiment, model: {name: tiny-bert}, train: {epochs: 1}}\n"
                 "  - <<: *base\n    name: b\n")
    cfg = config.load(f)
    assert [s.name for s in cfg.sweeps] == ["a", "b"] and cfg.sweeps[1].train.epochs == 1
    f.write_text("experiment: m\nexperiment: n\nsweeps: []\n")
    with pytest.raises(config.ConfigError, match="duplicate key 'experiment'"):  # a real duplicate is still refused
        config.load(f)


def test_files_without_a_source_are_read_from_the_files(tmp_path):
    (tmp_path / "d.csv").write_text(CSV)
    cfg = DataCfg.model_validate({"files": [str(tmp_path / "d.csv")], "split": [0.5, 0.25, 0.25]},
                                 context={"driver": True})
    assert cfg.source == "files"
    bundle = load_splits("sentiment", cfg)
    texts = {ex["text"] for part in bundle.splits.values() for ex in part}
    assert texts == {f"review number {i}" for i in range(40)}  # the file's rows, not synthetic examples
    assert bundle.name == "d.csv"  # a file name, never the machine's absolute path


def test_a_dev_fraction_is_carved_from_the_train_file_and_the_test_file_stays_whole(tmp_path):
    (tmp_path / "train.csv").write_text(CSV)
    (tmp_path / "test.csv").write_text(CSV.replace("review", "critique"))
    cfg = DataCfg.model_validate({"train": str(tmp_path / "train.csv"), "dev": 0.25, "test": str(tmp_path / "test.csv")},
                                 context={"driver": True})
    splits = load_splits("sentiment", cfg).splits
    assert len(splits["dev"]) == 10 and len(splits["train"]) == 30 and len(splits["test"]) == 40
    train, dev = {e["text"] for e in splits["train"]}, {e["text"] for e in splits["dev"]}
    assert not train & dev and train | dev == {f"review number {i}" for i in range(40)}
    assert all(e["text"].startswith("critique") for e in splits["test"])


def test_a_tag_only_in_test_warns_and_counts_as_a_class_the_model_never_sees():
    from squeeze.tasks.ner import NerTask

    sent = lambda tags: {"tokens": [f"w{i}" for i in range(len(tags))], "tags": tags}  # noqa: E731
    splits = {"train": [sent(["B-PER", "O"])], "dev": [sent(["B-PER", "O"])], "test": [sent(["B-LOC", "O"])]}
    labels = NerTask().labels(splits)
    assert labels[:2] == ["O", "B-PER"] and labels[-1] == "B-LOC"


def test_points_are_the_same_on_every_driver_and_named_by_their_values():
    from ray import tune

    space = {"train": {"lr": tune.loguniform(1e-5, 1e-3), "seed": tune.grid_search([0, 1])}, "params": {}}
    a, b = points.expand(space, 3, "ident"), points.expand(space, 3, "ident")
    assert a == b and len(a) == 6 and len({p["key"] for p in a}) == 6
    assert points.expand(space, 3, "other") != a  # another stage draws other values
    p = a[0]
    assert p["key"] == points.key({k: v for k, v in p.items() if k != "key"})
    assert all(isinstance(x["train"]["lr"], float) and 1e-5 <= x["train"]["lr"] <= 1e-3 for x in a)
    with pytest.raises(ValueError, match="makes 20,000 trials"):
        points.expand({"train": {"seed": tune.grid_search(list(range(10_000)))}}, 2, "i")


def test_the_stage_plan_skips_finished_and_own_failures_and_reruns_the_lost(tmp_path):
    from types import SimpleNamespace

    from squeeze.driver import stage

    def run(status, failure=None, error=""):
        tags = {"squeeze.failure": failure} if failure else {}
        if error:
            tags["squeeze.error"] = error
        return SimpleNamespace(info=SimpleNamespace(status=status), data=SimpleNamespace(tags=tags))

    pts = [{"key": k} for k in "abcde"]
    runs = {"a": run("FINISHED"), "b": run("FAILED", "raised", "Traceback\nRuntimeError: nan"), "c": run("FAILED", "lost"),
            "d": run("KILLED", "interrupted")}
    plan = stage.plan(pts, runs)
    assert [p["key"] for p in plan.todo] == ["c", "d", "e"] and plan.failed == {"b": "RuntimeError: nan"}
    assert [p["key"] for p in stage.plan(pts, runs, retry_failed=True).todo] == ["b", "c", "d", "e"]


def test_a_point_store_checkpoint_loads_only_with_its_recorded_digest(tmp_path):
    from squeeze.driver.point_store import CheckpointMismatch, PointStore

    store = PointStore(str(tmp_path / "stage"), "pabc", keep=1)
    rec1 = store.save(lambda d: (d / "w.bin").write_bytes(b"one"), 0)
    rec2 = store.save(lambda d: (d / "w.bin").write_bytes(b"two"), 1)
    store.prune()
    got = []
    store.load(rec2, lambda d: got.append((d / "w.bin").read_bytes()))
    assert got == [b"two"]
    with pytest.raises(FileNotFoundError):
        store.load(rec1)  # pruned
    (tmp_path / "stage" / "points" / "pabc" / "epoch-0001" / "w.bin").write_bytes(b"evil")
    with pytest.raises(CheckpointMismatch, match="does not match the digest"):
        store.load(rec2, lambda d: got.append("read"))
    assert got == [b"two"]  # the changed checkpoint was never read
    store.clear()
    assert not (tmp_path / "stage" / "points" / "pabc").exists()


def test_userinfo_is_masked_and_a_bad_port_is_refused(capsys):
    assert tracking.mask_secrets("x postgresql://bob:hunter2@db:5432/m y https://t0k@h/") == \
        "x postgresql://***@db:5432/m y https://***@h/"
    with pytest.raises(SystemExit) as stop:
        cli.main(["ui", "--port", "99999"])
    assert stop.value.code == 2 and "a TCP port is a whole number from 1 to 65535" in capsys.readouterr().err


def _trial_params(task, technique=("finetune",), **data):
    from helpers import tiny_sweep

    from squeeze.driver.trial import _params

    sweep = tiny_sweep(task=task, preset="tiny-gpt2" if task == "dialogue" else "tiny-bert", technique=technique)
    prepared = type("P", (), {"data_name": "synthetic", "sizes": {"train": 1}})()
    return _params(sweep, prepared, None)


def test_a_trial_logs_its_own_tasks_params_and_every_technique_default():
    sent = _trial_params("sentiment")
    assert not [k for k in sent if k.startswith("eval.") or k in ("data.scheme", "data.tag_column", "data.distractors")]
    assert "data.text_column" in sent
    ner = _trial_params("ner")
    assert "data.scheme" in ner and "data.label_column" not in ner and "data.distractors" not in ner
    assert "eval.max_new_tokens" in _trial_params("dialogue")
    dq = _trial_params("sentiment", technique=("dq",))
    assert dq["params.dq.backend"] == "torch"  # the default is logged, so MLflow's compare view never says "unknown"
    assert "train.lr" not in dq


def test_best_per_with_a_param_no_trial_has_is_refused(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.ensure_experiment(uri, "e")
    c = MlflowClient(tracking_uri=uri)
    parent = c.create_run(exp, tags={tracking.PARENT_TAG: "1", tracking.SWEEP_TAG: "prune"}).info.run_id
    child = c.create_run(exp, tags={tracking.NESTED: parent}).info.run_id
    c.log_param(child, "params.imp_prune.sparsity", "0.5")
    c.log_metric(child, "val/ppl", 3.0)
    c.set_terminated(child, "FINISHED")
    with pytest.raises(tracking.TrackingError, match="no finished trial of 'prune' has that param"):
        tracking.source_runs(uri, exp, "prune", select="best_per", per="params.imp_prune.spartsity", metric="val/ppl",
                             mode="min")
    assert tracking.source_runs(uri, exp, "prune", select="best_per", per="params.imp_prune.sparsity", metric="val/ppl",
                                mode="min") == [child]


def test_the_python_api_runs_a_study_from_a_dict_and_returns_the_load_runs_frame(workdir, ray_session):
    import squeeze
    from analysis.runs import load_runs

    doc = {"experiment": "api", "sweeps": [
        {"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60},
         "train": {"epochs": 1, "max_length": 32, "batch_size": 16}, "measure": {"latency": False},
         "search_space": {"seed": {"grid_search": [0, 1]}}}]}
    uri = f"sqlite:///{workdir / 'api.db'}"
    df = squeeze.study(doc, overrides=["train.lr=0.001"], tracking_uri=uri)
    again = load_runs("api", uri)
    assert list(df.columns) == list(again.columns) and sorted(df["run_id"]) == sorted(again["run_id"])
    assert len(df) == 2 and set(df["status"]) == {"FINISHED"} and set(df["lr"].astype(float)) == {0.001}
    assert len(squeeze.study(doc, overrides=["train.lr=0.001"], tracking_uri=uri)) == 2  # complete: skipped
    with pytest.raises(config.ConfigError, match="sweeps.0.train.epochs"):
        squeeze.study({**doc, "sweeps": [{**doc["sweeps"][0], "train": {"epochs": "x"}}]}, tracking_uri=uri)
    swept = squeeze.sweep(doc, overrides=["train.lr=0.001"], tracking_uri=uri)  # every stage afresh: a new parent
    assert len(swept) == 2 and not set(swept["run_id"]) & set(df["run_id"])
    from squeeze import sweep as driver  # the public name of the driver's module (squeeze.driver.sweep)

    assert callable(driver.run) and driver is squeeze.sweep is squeeze.driver.sweep  # the module keeps its functions


def test_the_python_api_refuses_what_it_would_misread_before_ray_starts(workdir):
    """An override given as one string would be read character by character; a source that is neither a path nor a
    dict is named, not a TypeError from deep inside."""
    import ray

    import squeeze

    doc = {"experiment": "api", "sweeps": [{"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}}]}
    before = ray.is_initialized()
    with pytest.raises(config.ConfigError, match="overrides: expected a list of key=value strings"):
        squeeze.study(doc, overrides="train.epochs=1")
    with pytest.raises(config.ConfigError, match="overrides: expected a list"):
        squeeze.sweep("s.yaml", overrides="train.epochs=1")
    with pytest.raises(config.ConfigError, match="a sweep file's path or the document as a dict, got int"):
        squeeze.study(42)
    assert ray.is_initialized() == before and not (workdir / "mlflow.db").exists()


def test_a_checkpoint_cut_short_is_never_the_one_kept(tmp_path):
    from squeeze.driver.point_store import PointStore

    store = PointStore(str(tmp_path / "stage"), "pk", keep=1)
    store.save(lambda d: (d / "w.bin").write_bytes(b"zero"), 0)
    with pytest.raises(RuntimeError):  # the trial died while writing epoch 1
        store.save(lambda d: ((d / "w.bin").write_bytes(b"half"), (_ for _ in ()).throw(RuntimeError("killed"))), 1)
    store.prune()
    root = tmp_path / "stage" / "points" / "pk"
    assert (root / "epoch-0000" / "w.bin").read_bytes() == b"zero"  # the complete one survives the prune
    rec = store.save(lambda d: (d / "w.bin").write_bytes(b"one"), 1)  # the retry rewrites epoch 1 whole
    got = []
    store.load(rec, lambda d: got.append((d / "w.bin").read_bytes()))
    assert got == [b"one"] and not (root / "epoch-0001.partial").exists()
