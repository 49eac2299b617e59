"""Real sweeps: Ray Tune trials against a real MLflow server on 127.0.0.1, and every sweep file."""

from __future__ import annotations

import glob
import json
import os

import pandas as pd
import pytest
import yaml

from squeeze import cli
from squeeze.driver.overrides import post_training

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, doc):
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_sweep_against_mlflow_server(workdir, ray_session, mlflow_server, capsys):
    from mlflow import MlflowClient

    from analysis.runs import load_runs

    f = _write(workdir / "s.yaml", {"experiment": "srv", "sweeps": [{
        "name": "senti", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 120},
        "train": {"epochs": 2, "batch_size": 16, "max_length": 48},
        "search_space": {"lr": {"grid_search": [1e-3, 3e-4]}}}]})
    assert cli.main(["sweep", f, "--tracking-uri", mlflow_server]) == 0
    out = capsys.readouterr().out
    assert "val/accuracy" in out and "test/accuracy" in out  # the closing results table

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("srv")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("squeeze.parent") == "1"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "config")] == ["config/resolved.yaml"]
    assert {r.data.params["train.lr"] for r in children} == {"0.001", "0.0003"}
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["task"] == "sentiment" and r.data.tags["technique"] == "baseline"
        p = r.data.params
        for key in ("task", "technique", "model.name", "train.seed", "data.n_train", "data.n_dev", "data.n_test",
                    "env.torch", "env.ray", "env.mlflow", "env.git_commit", "env.cpu"):
            assert key in p, key
        assert p["data.n_train"] == "60" and p["data.name"] == "synthetic-sentiment"
        history = client.get_metric_history(r.info.run_id, "val/accuracy")
        assert sorted(m.step for m in history) == [0, 1, 2]  # per epoch, then the final model's at step = epochs
        assert 0 <= r.data.metrics["test/accuracy"] <= 1 and "test/f1" in r.data.metrics
        arts = {a.path for a in client.list_artifacts(r.info.run_id, "model")}
        assert "model/model.safetensors" in arts and "model/config.json" in arts
        assert [a.path for a in client.list_artifacts(r.info.run_id, "predictions")] == ["predictions/test.jsonl"]
        assert "config/trial.yaml" in {a.path for a in client.list_artifacts(r.info.run_id, "config")}

    df = load_runs("srv", tracking_uri=mlflow_server)
    assert len(df) == 2
    assert sorted(df["lr"]) == [3e-4, 1e-3]
    assert {"task", "technique", "model", "val/accuracy", "test/accuracy"} <= set(df.columns)
    df.to_parquet(workdir / "runs.parquet")
    assert (workdir / "runs.parquet").stat().st_size > 0


def test_more_gpus_than_cluster_is_refused(workdir, ray_session, capsys):
    f = _write(workdir / "g.yaml", {"experiment": "g", "sweeps": [{
        "name": "a", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60},
        "resources": {"gpu": 1}}]})
    assert cli.main(["sweep", f]) == 2
    assert "sweeps.0.resources.gpu (a): this machine has no CUDA GPU" in capsys.readouterr().err
    f = _write(workdir / "c.yaml", {"experiment": "c", "sweeps": [{
        "name": "a", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60},
        "resources": {"cpu": 64}}]})
    assert cli.main(["sweep", f]) == 2
    assert "sweeps.0.resources.cpu (a): a trial asks for 64 CPUs, this machine has" in capsys.readouterr().err


def test_unreachable_tracking_server_refuses_to_start(workdir, capsys):
    f = _write(workdir / "u.yaml", {"experiment": "u", "sweeps": [{
        "name": "a", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60}}]})
    assert cli.main(["sweep", f, "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in capsys.readouterr().err
    assert not (workdir / "ray_results").exists()


SWEEP_FILES = sorted(glob.glob(os.path.join(ROOT, "sweeps", "**", "*.yaml"), recursive=True))


def _tiny_overrides(doc: dict, full_grid: bool) -> list[str]:
    """Shrink a sweep file to tiny models, generated data and 2 steps; keep post-training sweeps at 0 epochs."""
    over = ["train.max_steps=2", "train.max_length=48", "data.size=60", "data.source=synthetic", "data.files=[]",
            "data.train=null", "data.dev=null", "data.test=null", "data.name=null", "data.split=[0.6,0.2,0.2]",
            "eval.max_generate=2", "eval.max_rank=2", "eval.bertscore_model=null", "resources.gpu=0", "resources.cpu=1",
            "train.device=cpu", "data.truncation_side=right"]
    defaults = doc.get("defaults", {})
    for i, s in enumerate(doc["sweeps"]):
        task = s.get("task", defaults.get("task"))
        name = str(s.get("model", defaults.get("model", {})).get("name", ""))
        gpt2 = task == "dialogue" or any(k in name for k in ("gpt2", "smollm2", "llama"))  # decoders stay decoders
        over.append(f"sweeps.{i}.model.name={'tiny-gpt2' if gpt2 else 'tiny-bert'}")
        epochs = s.get("train", {}).get("epochs", defaults.get("train", {}).get("epochs", 1))
        if not post_training(s, defaults):  # post-training: 0 epochs
            over.append(f"sweeps.{i}.train.epochs={min(epochs, 1)}")
        if "imp_prune" in s.get("technique", []):  # 2 steps cannot hold a schedule: one forced prune to X at the end
            over += [f"sweeps.{i}.params.imp_prune.every=1", f"sweeps.{i}.params.imp_prune.allow_forced_final=true"]
        searched = s.get("search_space", {}).get("technique")
        if not full_grid:  # a searched technique stays searched: every alternative once, with its defaults
            techs = json.dumps({"grid_search": next(iter(searched.values()))}) if searched else ""
            over.append(f"sweeps.{i}.search_space={{{'technique: ' + techs if searched else ''}}}")
        search = s.get("search", {})
        if search.get("scheduler", "none") != "none":  # one epoch leaves nothing to stop
            over.append(f"sweeps.{i}.search.scheduler=none")
        if search.get("algorithm") in ("tpe", "nsga2") and not full_grid:  # without a space: one plain trial
            over += [f"sweeps.{i}.search.algorithm=grid", f"sweeps.{i}.search.seed=0", f"sweeps.{i}.num_samples=1"]
    return over


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[os.path.relpath(p, ROOT) for p in SWEEP_FILES])
def test_every_sweep_file_runs_a_couple_of_steps(workdir, ray_session, path, capsys):
    """lightning-hydra-template's habit: every experiment config runs, shrunk to tiny models and 2 steps.

    The quickstart keeps its grids, so the whole study is checked end to end: every stage in
    MLflow, DQ trials = baseline trials, dq+imp trials = imp trials, every parity check passed.
    """
    from analysis.runs import load_runs

    doc = yaml.safe_load(open(path))
    quick = "quickstart" in path
    assert cli.main(["study", path, *_tiny_overrides(doc, full_grid=quick)]) == 0
    df = load_runs(doc["experiment"])
    assert set(df["sweep"]) == {s["name"] for s in doc["sweeps"]}
    assert (df["status"] == "FINISHED").all()
    assert (df["parity/ok"] == 1.0).all()
    counts = df.groupby("sweep").size()
    for s in doc["sweeps"]:
        src = s.get("source")
        if src and src.get("select") == "all":
            assert counts[s["name"]] == counts[src["sweep"]], s["name"]
        if quick and not src:
            grid = 1
            for spec in s.get("search_space", {}).values():
                grid *= len(spec["grid_search"])
            assert counts[s["name"]] == grid, s["name"]
    # every trial carries its costs; on this GPU-less, RAPL-less machine energy is NaN and says why
    assert (df["time/train_s"] >= 0).all() and (df["latency/cpu_ms_per_example"] > 0).all()
    assert (df["size/disk_mb"] > 0).all() and "co2/kg" in df
    if not any(__import__("pathlib").Path("/sys/class/powercap").glob("intel-rapl*")):
        assert df["energy/cpu_kwh"].isna().all() and (df["energy/cpu_source"] == "unavailable").all()
    if quick:
        assert (df.loc[df["technique"].str.contains("dq"), "quant/int8_linear"] > 0).all()
        imp_rows = df[df["technique"] == "imp"]
        # decode tokens/s for the causal LMs only, each in its codec's runtime (int4 RTN: MatMulNBits with the cache)
        lm = df["task"] == "dialogue"
        assert (df.loc[lm, "latency/cpu_decode_tokens_per_s"] > 0).all() and df.loc[~lm, "latency/cpu_decode_tokens_per_s"].isna().all()
        quant = df[df["sweep"] == "dialogue-rtn-fp8"].set_index("technique")  # one stage, the technique searched
        assert sorted(quant.index) == ["fp8", "rtn"]
        assert quant.loc["rtn", "latency/decode_runtime"].startswith("onnxruntime MatMulNBits")
        assert "no speed-up here" in quant.loc["fp8", "latency/runtime"] and quant.loc["fp8", "quant/fp8_layers"] > 0
        assert (imp_rows["imp/sparsity"].round(4) == 0.5).all()
        # squeeze report on the real study: tables, PNGs, the grid caveat, logged to the study run
        from mlflow import MlflowClient

        assert cli.main(["report", "--experiment", doc["experiment"], "--out", str(workdir / "rep")]) == 0
        text = (workdir / "rep" / "report.md").read_text()
        assert "Table 4" in text and "grid search" in text and "| dq+imp" in text
        assert "CPU decode tok/s" in text and "decode speed-up (measured)" in text
        assert "The paper's claims, checked" in text and ">= 99%" in text and "![flowchart 99%](flowchart_99.png)" in text
        claims = pd.read_csv(workdir / "rep" / "claims.csv")
        assert {"dq-latency", "pkd-quality"} <= set(claims["claim"]) and claims["verdict"].notna().all()
        pngs = list((workdir / "rep").glob("*.png"))
        assert len(pngs) >= 12 and all(p.stat().st_size > 5000 for p in pngs) and not list((workdir / "rep").glob("*co2*"))
        client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
        exp = client.get_experiment_by_name(doc["experiment"])
        study = client.search_runs([exp.experiment_id], "tags.`squeeze.study` = '1'")
        assert len(study) == 1 and "report/report.md" in {a.path for a in client.list_artifacts(study[0].info.run_id, "report")}
        assert study[0].data.metrics["study/trials"] == len(df)
        # squeeze export reads a trial's model through its MLflow URI (this GPTQ is asymmetric: refused by name)
        gptq_run = df.loc[df["sweep"] == "sentiment-gptq", "run_id"].iloc[0]
        assert cli.main(["export", f"runs:/{gptq_run}/model", str(workdir / "ct"),
                         "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}"]) == 2
        assert not (workdir / "ct").exists() and "asymmetric grid" in capsys.readouterr().err
        # a re-run skips every complete stage
        assert cli.main(["study", path, *_tiny_overrides(doc, full_grid=True)]) == 0
        assert len(load_runs(doc["experiment"])) == len(df)
