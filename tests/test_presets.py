"""The offline pre-trained presets: MiniLM (BERT family) and SmolLM2-135M (Llama family, converted from GGUF once)."""

from __future__ import annotations

import json

import pytest
import yaml

from squeeze import cli, presets


def test_smollm2_is_a_pretrained_llama_converted_once_and_checked(tmp_path, monkeypatch):
    import torch
    import transformers

    folder = presets.smollm2_path()
    meta = json.loads(open(f"{folder}/squeeze_preset.json").read())
    assert "Q4_1" in meta["note"] and presets._verified(__import__("pathlib").Path(folder))
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])  # pre-trained, not random


def test_a_converted_preset_that_fails_its_checksum_is_not_trusted(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"weights")
    (d / "squeeze_preset.json").write_text(json.dumps({"sha256": presets.sha256_file(d / "model.safetensors")}))
    assert presets._verified(d)
    (d / "model.safetensors").write_bytes(b"weigh")  # truncated
    assert not presets._verified(d)


def test_dialogue_sweep_on_smollm2_dry_runs_offline(workdir, capsys):
    doc = {"experiment": "smol", "sweeps": [{"name": "d", "task": "dialogue", "model": {"name": "smollm2"},
                                             "data": {"size": 40}, "train": {"max_length": 64}}]}
    (workdir / "s.yaml").write_text(yaml.safe_dump(doc))
    assert cli.main(["sweep", "s.yaml", "--dry-run"]) == 0
    assert "valid; 1 sweep(s) prepared" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_presets_know_their_family(name):
    from squeeze import families

    assert families.family_of_type(presets.model_type(name)).name == {"minilm": "bert", "smollm2": "llama"}[name]
