"""fp8 W8A8 (``squeeze.formats.fp8``, technique ``fp8``): llm-compressor's FP8_DYNAMIC convention pinned by hand and
against the compressed-tensors library, the layer's arithmetic, save/load byte for byte, and the refusal on hardware
without fp8 GEMMs (before Ray starts, and again in the trial).

This machine has no CUDA GPU: the layers run on torch's reference CPU kernel (``emulate: true``); where a test asks
what a GPU would say, it replaces ``fp8.unsupported`` or torch.cuda's device queries (the hardware boundary) and says
so."""

from __future__ import annotations

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from squeeze import cli, formats
from squeeze.formats import fp8
from squeeze.registry import get_technique_class


def test_weights_quantize_per_row_to_448_as_worked_by_hand():
    W = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.3, 0.1, -0.2, 0.05]])
    q, scale = fp8.quantize(W)
    assert torch.equal(scale.squeeze(1), torch.tensor([2.0, 0.3]) / 448)
    # row 0: x / (2/448) = 224, -448, 112, 0: all exact in e4m3 (224 = 1.75 * 2^7, 112 = 1.75 * 2^6)
    assert q[0].float().tolist() == [224.0, -448.0, 112.0, 0.0]
    # row 1: 0.1 / (0.3/448) = 149.33 -> 144 (e4m3 steps of 16 in [128, 256)), -0.2 -> -298.67 -> -288, 0.05 -> 74.67 -> 72
    assert q[1].float().tolist() == [448.0, 144.0, -288.0, 72.0]
    assert torch.equal(fp8.quantize(torch.zeros(2, 16))[0].float(), torch.zeros(2, 16))  # an all-zero row stays finite


def test_the_convention_is_compressed_tensors_fp8_dynamic():
    """The scales and float8 values the compressed-tensors library computes for FP8_DYNAMIC's weights (channel) and
    activations (token): if upstream changes its convention, this fails."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    torch.manual_seed(0)
    x = torch.randn(48, 64) * torch.logspace(-2, 1, 64)  # channels of very different ranges
    for strategy in ("channel", "token"):
        args = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy=strategy, dynamic=strategy == "token")
        scale, zero = calculate_qparams(x.amin(1, keepdim=True), x.amax(1, keepdim=True), args)
        ours, our_scale = fp8.quantize(x)
        assert torch.allclose(our_scale, scale, rtol=1e-7, atol=0)
        theirs = quantize(x, scale, zero, args, dtype=torch.float8_e4m3fn)
        assert torch.equal(ours.view(torch.uint8), theirs.view(torch.uint8)), strategy


def test_the_layer_computes_with_the_float8_operands_and_stays_near_fp32():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    layer = fp8.Fp8Linear.from_linear(lin)
    x = torch.randn(2, 5, 64)
    xq, xs = fp8.quantize(x.reshape(-1, 64))
    want = ((xq.float() * xs) @ layer.dequantized().T + lin.bias).reshape(2, 5, 48)
    got = layer(x)
    assert got.shape == (2, 5, 48) and torch.allclose(got, want, rtol=0, atol=1e-5)
    # e4m3 keeps 3 mantissa bits: each operand within 2^-4 relative, the output within a few percent of fp32's scale
    with torch.no_grad():
        exact = lin(x)
    assert float((got - exact).abs().max()) < 0.06 * float(exact.abs().max())
    assert float((got - exact).abs().max()) > 0  # it really is quantized
    with pytest.raises(ValueError, match="multiples of 16"):
        fp8.Fp8Linear.from_linear(torch.nn.Linear(40, 48))


def _llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def _fp8(model, **params):
    t = get_technique_class("fp8")(None)
    t.p = t.Params(**params)
    return t.compress(model, [])


def test_saved_and_loaded_byte_for_byte_with_float8_on_disk(tmp_path):
    from safetensors import safe_open

    model = _fp8(_llama(), emulate=True)
    layers = fp8.layers_of(model)
    assert len(layers) == 14 and formats.of(model).name == "fp8"  # 7 Linear per Llama layer, the LM head kept
    formats.save(model, tmp_path / "m", auto_class="AutoModelForCausalLM")
    again = formats.load(tmp_path / "m")
    for name, layer in fp8.layers_of(again).items():
        assert torch.equal(layer.weight.view(torch.uint8), layers[name].weight.view(torch.uint8))
        assert torch.equal(layer.weight_scale, layers[name].weight_scale)
    with safe_open(formats.weights_path(tmp_path / "m"), "pt") as f:
        assert f.get_tensor("model.layers.0.mlp.up_proj.weight").dtype == torch.float8_e4m3fn
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, model(input_ids=ids).logits)
    size = formats.of(model).size(model)
    dense = formats.of(_llama()).size(_llama())
    assert size["size/memory_mb"] < dense["size/memory_mb"] and size["size/nonzero"] > 0
    _, line = formats.of(model).serving(model)
    assert "no speed-up here" in line and "CPU has no fp8 GEMM" in line


def test_the_trial_refuses_fp8_without_a_capable_gpu_unless_emulated():
    with pytest.raises(RuntimeError, match=r"compute capability >= 8\.9.*emulate: true"):
        _fp8(_llama())


def _study(tmp_path, **train):
    doc = {"experiment": "fp8", "sweeps": [
        {"name": "base", "task": "sentiment", "model": {"name": "tiny-llama"}, "technique": ["finetune"],
         "data": {"source": "synthetic", "size": 40}, "train": {"epochs": 1, "device": "cpu"}},
        {"name": "f", "task": "sentiment", "model": {"name": "tiny-llama"}, "technique": ["fp8"],
         "source": {"sweep": "base"}, "data": {"source": "synthetic", "size": 40},
         "train": {"epochs": 0, **train}, "resources": {"gpu": 1 if train.get("device") != "cpu" else 0}}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_a_study_asking_fp8_of_a_cpu_is_refused_before_ray_naming_the_requirement(workdir, capsys):
    import ray

    ray_before = ray.is_initialized()  # an earlier test in this process may have started Ray
    assert cli.main(["study", _study(workdir, device="cpu"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "sweeps.1.train.device (f)" in err and "compute capability >= 8.9" in err and "emulate: true" in err
    assert "Traceback" not in err and ray.is_initialized() == ray_before
    assert not (workdir / "ray_results").exists()


def test_the_gpu_generation_is_checked_before_ray(monkeypatch, workdir, capsys):
    """The GPU is faked at torch.cuda's device queries (this machine has none): an A100 (8.0) is refused by name,
    an H100 (9.0) passes the check."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (8, 0))
    assert cli.main(["study", _study(workdir, device="cuda"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "A100-SXM4-80GB has compute capability 8.0, below 8.9" in err
    from squeeze.techniques.oneshot import Fp8

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    Fp8.check_machine(Fp8.Params(), "cuda", 1, local=True)  # an H100: no error
    Fp8.check_machine(Fp8.Params(), "auto", 1, local=False)  # a cluster: the trial checks its own GPU
    with pytest.raises(ValueError, match="resources.gpu"):
        Fp8.check_machine(Fp8.Params(), "auto", 0, local=True)
