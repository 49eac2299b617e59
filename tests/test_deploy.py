"""Compressed models outside squeeze: MLflow Models (pyfunc), squeeze.load, and transformers refusing what it cannot read."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import squeeze
from helpers import tiny_sweep
from squeeze.prepare import prepare
from squeeze.recipe import Recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny sentiment baseline and its DQ model, each saved as a trial saves it."""
    tmp = tmp_path_factory.mktemp("deploy")
    cache = tmp / "cache"
    out = {}
    for name, technique, source in (("base", ["finetune"], None), ("dq", ["dq"], tmp / "base" / "model")):
        cfg = tiny_sweep("sentiment", size=120, technique=technique, epochs=0 if name == "dq" else 2, lr=2e-3,
                         source="x" if source else None, num_threads=2)
        prepared = prepare(cfg, cache, tokenizer_dir=source)
        r = Recipe(cfg, prepared, cache_dir=cache, source_dir=str(source) if source else None)
        list(r.fit())
        r.finish(tmp / name)
        out[name] = (tmp / name / "model", prepared)
    return out


def test_transformers_refuses_an_int8_folder_and_loads_a_plain_one(trained):
    import transformers

    dq, _ = trained["dq"]
    with pytest.raises(OSError, match="model.safetensors"):
        transformers.AutoModelForSequenceClassification.from_pretrained(dq)
    assert "from_pretrained` refuses the folder" in (dq / "README.md").read_text()
    base, prepared = trained["base"]
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(base).eval()
    ours = squeeze.load(base)
    batch = {k: torch.tensor([prepared.features["test"][0][k]]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        assert torch.equal(hf(**batch).logits, ours(**batch).logits)


def test_a_dq_folder_is_an_mlflow_model_that_predicts_texts(trained):
    import mlflow

    dq, prepared = trained["dq"]
    texts = [ex["text"] for ex in prepared.examples["test"][:6]]
    model = mlflow.pyfunc.load_model(str(dq))
    got = model.predict(pd.DataFrame({"text": texts}))
    assert len(got) == 6 and set(got) <= set(prepared.labels)
    ours = squeeze.load(dq)  # the same int8 model, bit for bit
    enc = prepared.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = ours(**{k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}).logits.argmax(-1)
    assert got == [ours.config.id2label[i] for i in direct.tolist()]


@pytest.mark.parametrize("task", ["sentiment", "ner"])
def test_dq_through_onnxruntime_is_evaluated_saved_and_reloaded_as_an_int8_onnx_graph(tmp_path, task):
    """backend onnxruntime: the trial's test metrics come from the int8 ONNX graph, which is what is saved (and
    reloads to the same predictions); it agrees with torch's DQ of the same model on nearly every prediction."""
    import json

    import onnx

    cache, out = tmp_path / "cache", {}
    base = tiny_sweep(task, size=150, epochs=3, lr=3e-3, num_threads=2)
    prepared = prepare(base, cache)
    r = Recipe(base, prepared, cache_dir=cache)
    list(r.fit())
    base_final = r.finish(tmp_path / "base").metrics
    for backend in ("torch", "onnxruntime"):
        cfg = tiny_sweep(task, size=150, technique=["dq"], epochs=0, source="x", num_threads=2,
                         params={"dq": {"backend": backend}})
        p = prepare(cfg, cache, tokenizer_dir=tmp_path / "base" / "model")
        r = Recipe(cfg, p, cache_dir=cache, source_dir=str(tmp_path / "base" / "model"))
        list(r.fit())
        out[backend] = r.finish(tmp_path / backend)
    ort_final = out["onnxruntime"].metrics
    folder = tmp_path / "onnxruntime" / "model"
    assert json.loads((folder / "squeeze_format.json").read_text())["backend"] == "onnxruntime"
    graph = onnx.load(str(folder / "model.int8.onnx")).graph
    assert sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in graph.node) >= 4 * 2  # Q,K,V,O per layer at least
    assert ort_final["quant/int8_linear"] >= 8 and ort_final["quant/float_linear"] == 0
    assert ort_final["parity/ok"] == 1.0  # reloaded from the folder: the same test metric
    assert ort_final["size/disk_mb"] < 0.6 * base_final["size/disk_mb"]  # tiny graph: its node list weighs ~40%
    primary = {"sentiment": "accuracy", "ner": "f1"}[task]
    assert abs(ort_final[f"test/{primary}"] - out["torch"].metrics[f"test/{primary}"]) <= 0.1
    model = squeeze.load(folder)
    texts = [" ".join(ex["tokens"]) if "tokens" in ex else ex["text"] for ex in p.examples["test"][:4]]
    if task == "sentiment":
        import mlflow

        got = mlflow.pyfunc.load_model(str(folder)).predict(pd.DataFrame({"text": texts}))
        enc = p.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        direct = model(**{k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}).logits
        assert got == [model.config.id2label[i] for i in direct.argmax(-1).tolist()]


def test_dq_backend_auto_times_both_runtimes_and_keeps_the_faster(tmp_path, monkeypatch):
    """backend auto: both int8 forms are built and timed on the same test examples; the faster is evaluated and
    saved, both timings and the pick are logged. With ONNX Runtime's timing made slow, torch's form is kept."""
    import json

    from squeeze import measure

    cache = tmp_path / "cache"
    base = tiny_sweep("sentiment", size=120, epochs=1, lr=3e-3, num_threads=2)
    r = Recipe(base, prepare(base, cache), cache_dir=cache)
    list(r.fit())
    r.finish(tmp_path / "base")
    cfg = tiny_sweep("sentiment", size=120, technique=["dq"], epochs=0, source="x", num_threads=2,
                     params={"dq": {"backend": "auto"}})
    p = prepare(cfg, cache, tokenizer_dir=tmp_path / "base" / "model")

    def dq(out):
        d = Recipe(cfg, p, cache_dir=cache, source_dir=str(tmp_path / "base" / "model"))
        list(d.fit())
        return d.finish(tmp_path / out).metrics

    m = dq("auto")
    assert m["dq/auto_torch_ms"] > 0 and m["dq/auto_onnxruntime_ms"] > 0 and m["parity/ok"] == 1.0
    picked = json.loads((tmp_path / "auto" / "model" / "squeeze_format.json").read_text()).get("backend", "torch")
    faster = "onnxruntime" if m["dq/auto_onnxruntime_ms"] < m["dq/auto_torch_ms"] else "torch"
    assert picked == faster and m["dq/auto_onnxruntime"] == float(faster == "onnxruntime")
    timed = measure.time_cpu

    def slow_ort(fn, **kw):  # the ONNX Runtime rounds come first in each pair: make every first one slow
        slow_ort.n += 1
        out = timed(fn, **kw)
        return {**out, "median_ms": out["median_ms"] + (1e6 if slow_ort.n % 2 else 0)}
    slow_ort.n = 0
    monkeypatch.setattr(measure, "time_cpu", slow_ort)
    m = dq("slow-ort")
    assert m["dq/auto_onnxruntime"] == 0.0 and m["quant/int8_linear"] > 0
    assert json.loads((tmp_path / "slow-ort" / "model" / "squeeze_format.json").read_text()).get("backend", "torch") == "torch"
    gen = tiny_sweep("dialogue", preset="tiny-gpt2", technique=["dq"], epochs=0, source="x",
                     params={"dq": {"backend": "auto"}})  # no ONNX Runtime path for a decoder: accepted, torch kept
    assert gen.params["dq"]["backend"] == "auto"


def test_an_onnx_export_that_froze_a_shape_is_refused_before_quantizing():
    """A model whose output depends on a Python number taken from its input: the trace freezes it, the graph
    then answers another batch wrongly, and the export check says so instead of a report showing it."""
    from transformers.modeling_outputs import SequenceClassifierOutput

    from squeeze.formats import onnx_int8 as onnxrt

    class Frozen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 2)

        def forward(self, input_ids, attention_mask):
            scale = float(input_ids.shape[1])  # a Python float: a constant in the trace
            mask = attention_mask.float().mean(1, keepdim=True)
            return SequenceClassifierOutput(logits=self.head(self.emb(input_ids).mean(1)) * scale * mask)

    example = {"input_ids": torch.randint(0, 50, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    check = {"input_ids": torch.randint(0, 50, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    with pytest.raises(AssertionError, match="changed the fp32 logits on a batch of shape"):
        onnxrt.quantize(Frozen(), example, check, embeddings=False)


def test_dq_through_onnxruntime_is_refused_for_generation():
    from squeeze.config import ConfigError

    with pytest.raises(ConfigError, match="backend: onnxruntime runs classifier heads"):
        tiny_sweep("dialogue", preset="tiny-gpt2", technique=["dq"], epochs=0, source="x",
                   params={"dq": {"backend": "onnxruntime"}})


def test_a_torch_without_torch_ao_quantization_is_refused_for_dq_before_any_trial(monkeypatch):
    """torch.ao.quantization is deprecated; the day a torch drops it, DQ's default backend says so and names the way
    out, instead of failing in every trial."""
    import sys

    from squeeze.config import ConfigError

    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)  # what an import of a removed module does
    with pytest.raises(ConfigError, match="has no torch.ao dynamic quantization; use backend: onnxruntime"):
        tiny_sweep("sentiment", technique=["dq"], epochs=0, source="x")


@pytest.mark.slow
def test_a_logged_dq_model_loads_from_its_run_and_registers(trained, mlflow_server):
    import mlflow
    from mlflow import MlflowClient

    from squeeze import tracking

    dq, prepared = trained["dq"]
    exp = tracking.ensure_experiment(mlflow_server, "deploy")
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(dq), "model")  # what a trial logs
    mlflow.set_tracking_uri(mlflow_server)
    try:
        texts = pd.DataFrame({"text": [ex["text"] for ex in prepared.examples["test"][:3]]})
        by_run = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(texts)
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "squeeze-dq")
        by_name = mlflow.pyfunc.load_model(f"models:/squeeze-dq/{version.version}").predict(texts)
        assert by_run == by_name and len(by_run) == 3
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_a_tiny_study_prints_a_line_per_trial_and_honours_mlflow_tracking_uri(tmp_path):
    """The default console: a line per stage and per trial start and end, the results table, no Ray boxes; the
    store named by MLFLOW_TRACKING_URI is used (and read by `squeeze ls` from another folder)."""
    import os
    import subprocess
    import sys

    import yaml

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    doc = {"experiment": "lines", "sweeps": [{"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"},
                                              "data": {"size": 80}, "train": {"epochs": 1, "max_length": 32},
                                              "search_space": {"seed": {"grid_search": [0, 1, 2, 3]}}}]}
    (work / "s.yaml").write_text(yaml.safe_dump(doc))
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'store.db'}", SQUEEZE_PROGRESS_EVERY_S="0")
    run = subprocess.run([sys.executable, "-m", "squeeze.cli", "study", "s.yaml"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = (run.stdout + run.stderr).splitlines()
    assert len(lines) <= 80 and sum("finished" in line for line in lines) == 4
    started = [line for line in lines if "started:" in line]  # the stage's size, not the trials Tune made so far
    assert len(started) == 4 and all(line.endswith("(4 trials)") for line in started), started
    assert sorted(line.split("finished (")[1][:3] for line in lines if "finished (" in line) == ["1/4", "2/4", "3/4", "4/4"]
    assert sum("[base] tokeniz" in line for line in lines) == 2  # before and after, with a count and a speed
    inside = [line for line in lines if "of the epoch" in line]  # posted from inside an epoch (every step at 0 s)
    assert all("steps/s, epoch ETA" in line for line in inside), inside
    progress = [line for line in lines if "epoch 1/1: step" in line and "of the epoch" not in line]  # epoch ends
    assert len(progress) == 4 and all("steps/s, val/accuracy" in line and "ETA 0 s" in line for line in progress)
    assert not any("╭" in line or "TensorBoard" in line or "Token authentication" in line for line in lines)
    assert (tmp_path / "store.db").exists() and not (work / "mlflow.db").exists()
    ls = subprocess.run([sys.executable, "-m", "squeeze.cli", "ls", "--experiment", "lines"], cwd=elsewhere, env=env,
                        capture_output=True, text=True, timeout=200)
    assert ls.returncode == 0 and ls.stdout.count("baseline") == 4 and not (elsewhere / "mlflow.db").exists()
    assert "--version" in subprocess.run([sys.executable, "-m", "squeeze.cli", "--help"], capture_output=True, text=True).stdout


@pytest.mark.slow
def test_a_minilm_trial_leaves_a_bounded_ray_results(workdir, ray_session):
    """A finished stage keeps no checkpoints (model, best weights, optimizer: about 260 MB per epoch for MiniLM)."""
    import yaml

    from squeeze import cli

    doc = {"experiment": "disk", "checkpoints_to_keep": 2, "sweeps": [{
        "name": "m", "task": "sentiment", "model": {"name": "minilm"}, "data": {"size": 120},
        "train": {"epochs": 2, "max_length": 32, "batch_size": 16}, "measure": {"latency": False}}]}
    (workdir / "m.yaml").write_text(yaml.safe_dump(doc))
    assert cli.main(["sweep", "m.yaml"]) == 0
    size = sum(f.stat().st_size for f in (workdir / "ray_results").rglob("*") if f.is_file())
    assert size < 5 * 2**20, f"ray_results holds {size / 2**20:.0f} MB"


def test_a_trials_epoch_lines_come_at_most_once_per_progress_interval(monkeypatch, capsys):
    """Long epochs show steps/s, the dev metric and an ETA; a study of short trials stays a line per start and end."""
    from types import SimpleNamespace

    from squeeze import console

    clock = [1000.0]
    monkeypatch.setattr(console.time, "time", lambda: clock[0])
    monkeypatch.setattr(console, "PROGRESS_EVERY_S", 20.0)
    lines = console.trial_lines("s", "accuracy", epochs=3)
    trial = SimpleNamespace(trial_id="t1", config={"point": {"train": {"lr": 1e-3}}}, last_result={})
    lines.on_trial_start(0, [trial], trial)
    for at, epoch in ((5, 0), (25, 1), (30, 2)):
        clock[0] = 1000.0 + at
        lines.on_trial_result(0, [trial], trial, {"epoch": epoch, "step": 10 * (epoch + 1), "val/accuracy": 0.5})
    said = [line for line in capsys.readouterr().err.splitlines() if "epoch" in line]
    assert said == ["[s] trial t1 epoch 2/3: step 20, 0.80 steps/s, val/accuracy 0.5, ETA 12 s"]
    # a step cap ends the trial before its last epoch: the ETA counts to the cap (5 steps at 1.25 s), not to epoch 3
    capped = SimpleNamespace(trial_id="t2", config={"point": {"train": {"max_steps": 25}}}, last_result={})
    clock[0] = 2000.0
    lines.on_trial_start(0, [capped], capped)
    clock[0] = 2025.0
    lines.on_trial_result(0, [capped], capped, {"epoch": 1, "step": 20, "val/accuracy": 0.5})
    assert capsys.readouterr().err.splitlines()[-1].endswith("epoch 2/3: step 20, 0.80 steps/s, val/accuracy 0.5, ETA 6 s")


def test_a_trials_progress_posts_reach_the_console_through_the_cluster_store(ray_session, monkeypatch, capsys):
    """What a trial posts with console.progress (the teacher cache's build) is printed by the driver's trial lines:
    once per new post, at most every PROGRESS_EVERY_S, and the trial's key is gone when it ends."""
    from types import SimpleNamespace

    from ray.experimental.internal_kv import _internal_kv_get

    from squeeze import console

    monkeypatch.setattr(console, "PROGRESS_EVERY_S", 0.0)
    lines = console.trial_lines("pkd", "accuracy", epochs=2, total=1)
    trial = SimpleNamespace(trial_id="p1", config={}, last_result={}, status="RUNNING")
    lines.on_trial_start(0, [trial], trial)
    console.progress("outside a trial: nothing", every_s=0.0)  # the driver is in no Tune trial
    console.post_progress("p1", "teacher cache 32/100 rows, 9.0 rows/s, ETA 8 s")
    lines.on_step_begin(0, [trial])
    lines.polled = 0.0
    lines.on_step_begin(0, [trial])  # nothing new posted: nothing printed again
    said = [line for line in capsys.readouterr().err.splitlines() if "trial p1:" in line]
    assert said == ["[pkd] trial p1: teacher cache 32/100 rows, 9.0 rows/s, ETA 8 s"]
    lines.on_trial_complete(0, [trial], trial)
    assert _internal_kv_get(b"squeeze:progress:p1") is None
