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
