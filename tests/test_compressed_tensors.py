"""compressed-tensors output (``squeeze.formats.compressed_tensors``): a symmetric RTN/GPTQ model written through the
compressed-tensors library reloads through transformers to the same logits, its stored integers are the layer's own;
so does an fp8 model (``float-quantized``, llm-compressor's FP8_DYNAMIC: float8 weights byte for byte, per-token inputs);
what the format cannot hold (GPT-2's Conv1D, AWQ input scales, asymmetric zero points, no weight-only layer) is refused
by name. If compressed-tensors or transformers change the format or its loading, these fail loudly."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from squeeze import formats
from squeeze.formats import compressed_tensors
from squeeze.formats.weight_only import quant_layers
from squeeze.registry import get_technique_class


def _llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def _gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=64)).eval()


def _quantized(model, technique="rtn", **params):
    t = get_technique_class(technique)(None)
    t.p = t.Params(**params)
    return t.compress(model, [])


@pytest.mark.parametrize("build,bits,group", [(_llama, 4, 32), (_llama, 8, -1)], ids=["int4-g32", "int8-per-row"])
def test_a_symmetric_model_reloads_through_transformers_to_its_logits(tmp_path, build, bits, group):
    model = _quantized(build(), bits=bits, group_size=group, sym=True)
    formats.save(model, tmp_path / "squeeze", auto_class="AutoModelForCausalLM")
    out = compressed_tensors.export(tmp_path / "squeeze", tmp_path / "ct")  # from the folder squeeze saved
    cfg = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
    (scheme,) = cfg["config_groups"].values()
    assert scheme["weights"]["num_bits"] == bits and scheme["weights"]["symmetric"] is True
    assert len(scheme["targets"]) == len(quant_layers(model))
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 300, (3, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want, got = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5 * max(1.0, float(want.abs().max())))
    name, layer = next(iter(quant_layers(model).items()))  # the stored integers are the layer's own
    dense = loaded.get_submodule(name).weight
    assert torch.equal(dense, layer.dequantized())


def test_what_the_format_cannot_hold_is_refused_by_name(tmp_path):
    with pytest.raises(compressed_tensors.NotExportable, match="asymmetric grid"):
        compressed_tensors.export(_quantized(_llama(), bits=4, group_size=32, sym=False), tmp_path / "a")
    with pytest.raises(compressed_tensors.NotExportable, match="Conv1D"):
        compressed_tensors.export(_quantized(_gpt2(), bits=4, group_size=32, sym=True), tmp_path / "g")
    with pytest.raises(compressed_tensors.NotExportable, match="not a multiple of groups of 48"):
        compressed_tensors.export(_quantized(_llama(), bits=4, group_size=48, sym=True), tmp_path / "p")
    with pytest.raises(compressed_tensors.NotExportable, match="no weight-only .* or fp8 layer"):
        compressed_tensors.export(_llama(), tmp_path / "b")
    awq = _quantized(_llama(), bits=4, group_size=32, sym=True)
    layer = next(iter(quant_layers(awq).values()))
    layer.register_buffer("input_scale", torch.ones(layer.in_features))  # the form AWQ leaves
    with pytest.raises(compressed_tensors.NotExportable, match="AWQ input scale"):
        compressed_tensors.export(awq, tmp_path / "c")


def test_an_fp8_model_reloads_through_transformers_as_fp8_dynamic(tmp_path):
    from safetensors import safe_open

    from squeeze.formats.fp8 import layers_of

    t = get_technique_class("fp8")(None)
    t.p = t.Params(emulate=True)  # this CPU has no fp8 GEMM: torch's reference kernel, the same arithmetic
    model = t.compress(_llama(), [])
    out = compressed_tensors.export(model, tmp_path / "ct")
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["format"] == "float-quantized"
    (scheme,) = cfg["config_groups"].values()
    assert scheme["weights"]["type"] == "float" and scheme["weights"]["strategy"] == "channel"
    assert scheme["input_activations"]["strategy"] == "token" and scheme["input_activations"]["dynamic"] is True
    layers = layers_of(model)
    assert len(scheme["targets"]) == len(layers) == 14
    with safe_open(out / "model.safetensors", "pt") as f:  # the stored float8 bytes are the layer's own
        for name, layer in layers.items():
            stored = f.get_tensor(f"{name}.weight")
            assert stored.dtype == torch.float8_e4m3fn
            assert torch.equal(stored.view(torch.uint8), layer.weight.view(torch.uint8)), name
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 300, (3, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want, got = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5 * max(1.0, float(want.abs().max())))


def test_squeeze_export_writes_a_trial_folder_and_refuses_what_it_cannot(tmp_path, capsys):
    from squeeze import cli

    model = _quantized(_llama(), bits=4, group_size=32, sym=True)
    formats.save(model, tmp_path / "trial", auto_class="AutoModelForCausalLM")
    assert cli.main(["export", str(tmp_path / "trial"), str(tmp_path / "ct")]) == 0
    assert "compressed-tensors pack-quantized" in capsys.readouterr().out
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "ct") is not None
    assert not list(tmp_path.glob(".*partial"))
    # a folder already holding files is not overwritten; a missing one, or a model the format cannot hold, is refused
    assert cli.main(["export", str(tmp_path / "trial"), str(tmp_path / "ct")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "no such folder" in capsys.readouterr().err
    formats.save(_llama(), tmp_path / "dense", auto_class="AutoModelForCausalLM")
    assert cli.main(["export", str(tmp_path / "dense"), str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "no weight-only" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".*partial"))
