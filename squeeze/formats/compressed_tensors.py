"""A weight-only model as a compressed-tensors folder (``pack-quantized``), or an fp8 one (``float-quantized``, the
``FP8_DYNAMIC`` scheme): llm-compressor's output format, which transformers (with the ``compressed-tensors`` package)
and vLLM load.

    from squeeze.formats import compressed_tensors
    compressed_tensors.export("mlruns/.../artifacts/model", "out/")   # a folder squeeze saved, or the model itself
    AutoModelForCausalLM.from_pretrained("out/")                        # the same logits

The layers' own integers and scales are written through the ``compressed-tensors`` library (its
``apply_quantization_config`` and ``ModelCompressor``, nothing hand-packed); the library re-quantizes each dequantized
weight with the scales given, which returns the stored integers (or float8 values) exactly. Every export is reloaded through transformers
and must give the squeeze model's logits (``TOLERANCE`` of their scale), else it is refused.

What the format cannot hold is refused by name, never approximated: GPT-2's Conv1D projections (reloaded transposed
and unquantized, 0.5 of the logits' scale away), AWQ's per-layer input scales (squeeze keeps them
beside each layer; pack-quantized folds scales into the previous operator), and asymmetric grids (a zero point per
group): compressed-tensors 0.20 packs zero points into int32 rows that transformers 5.2x's loader then expects
unpacked (size mismatch), so use ``sym: true`` (zero point 2^(bits-1), compressed-tensors' symmetric grid).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from squeeze.formats.base import set_module
from squeeze.formats.weight_only import quant_layers

TOLERANCE = 1e-5
CONV1D = ("gpt2", "openai-gpt")  # model types whose projections transformers builds as Conv1D, not Linear


class NotExportable(ValueError):
    """The model cannot be written as compressed-tensors (why is in the message)."""


def _schemes(layers: dict) -> dict:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    groups: dict[tuple[int, int], list[str]] = {}
    for name, layer in layers.items():
        if layer.input_scale is not None:
            raise NotExportable(f"{name} has an AWQ input scale, which pack-quantized cannot hold (it folds scales into "
                                "the previous operator; squeeze keeps them per layer): export RTN or GPTQ models")
        if int((layer.zeros != 2 ** (layer.bits - 1)).sum()):
            raise NotExportable(f"{name} has an asymmetric grid (a zero point per group); compressed-tensors 0.20 "
                                "writes zero points that transformers cannot load back: quantize with sym: true")
        per_row = layer.group_size >= layer.in_features
        if not per_row and layer.in_features % layer.group_size:
            raise NotExportable(f"{name}: {layer.in_features} inputs are not a multiple of groups of {layer.group_size} "
                                "(compressed-tensors has no partial last group): choose a group size that divides them")
        groups.setdefault((layer.bits, 0 if per_row else layer.group_size), []).append(name)
    out = {}
    for i, ((bits, group), names) in enumerate(sorted(groups.items())):
        args = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group" if group else "channel",
                                group_size=group or None)
        out[f"group_{i}"] = QuantizationScheme(targets=sorted(names), weights=args)
    return out


def _fp8_schemes(layers: dict) -> dict:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="channel")
    tokens = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="token", dynamic=True)
    return {"group_0": QuantizationScheme(targets=sorted(layers), weights=weights, input_activations=tokens)}


def export(model: nn.Module | str | Path, directory: str | Path, tokenizer=None) -> Path:
    """Write ``model`` (a weight-only or fp8 model, or a folder squeeze saved one in) to ``directory`` as
    compressed-tensors.

    Raises:
        NotExportable: the model is neither, holds what the format cannot, or did not reload to its logits.
    """
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus, apply_quantization_config

    from squeeze import formats

    if isinstance(model, (str, Path)):
        source = Path(model)
        model = formats.load(source)
        if tokenizer is None and any(source.glob("tokenizer*")):
            import transformers

            tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    from squeeze.formats import fp8

    layers, fp8_layers = quant_layers(model), fp8.layers_of(model)
    if not layers and not fp8_layers:
        raise NotExportable("the model holds no weight-only (RTN, GPTQ) or fp8 layer: nothing to write as "
                            "compressed-tensors")
    if layers and fp8_layers:
        raise NotExportable("the model holds weight-only and fp8 layers: compressed-tensors writes one format per folder")
    if model.config.model_type in CONV1D:
        raise NotExportable(f"{model.config.model_type}: transformers rebuilds its projections as Conv1D (weights "
                            "stored transposed), which compressed-tensors does not target; export Llama or BERT models")
    groups = _schemes(layers) if layers else _fp8_schemes(fp8_layers)
    layers = layers or fp8_layers
    config = QuantizationConfig(config_groups=groups, quantization_status=QuantizationStatus.FROZEN)
    plain = copy.deepcopy(model).to("cpu").eval()
    if getattr(plain, "hf_quantizer", None) is not None:  # de-quantized by transformers on load (GGUF): plain floats now
        plain.hf_quantizer = None
        plain.config.__dict__.pop("quantization_config", None)
    for name, layer in layers.items():
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        linear.weight.data = layer.dequantized()
        if layer.bias is not None:
            linear.bias.data = layer.bias.clone()
        set_module(plain, name, linear)
    apply_quantization_config(plain, config, show_progress=False)
    for name, layer in layers.items():
        module = plain.get_submodule(name)
        scales = layer.weight_scale if fp8_layers else layer.scales
        module.weight_scale.data = scales.clone().to(module.weight_scale.dtype).reshape(module.weight_scale.shape)
        module.quantization_status = QuantizationStatus.FROZEN
    fmt = "float-quantized" if fp8_layers else "pack-quantized"
    compressor = ModelCompressor.from_pretrained_model(plain, quantization_format=fmt)
    compressor.compress_model(plain)
    directory = Path(directory)
    plain.save_pretrained(directory)
    compressor.update_config(str(directory))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    _check(model, directory)
    return directory


def _check(model: nn.Module, directory: Path) -> float:
    import transformers

    auto = getattr(transformers, f"AutoModelFor{_head(model)}")
    loaded = auto.from_pretrained(directory).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    device = next(model.parameters()).device  # compared where the model is: the caller's model is not moved
    with torch.no_grad():
        want, got = model(input_ids=ids.to(device)).logits.cpu(), loaded(input_ids=ids).logits
    diff = float((got - want).abs().max()) / max(1.0, float(want.abs().max()))
    if diff > TOLERANCE:
        raise NotExportable(f"the compressed-tensors folder {directory} reloads to logits {diff:.3g} (relative) away from "
                            "the model's: not a faithful export")
    return diff


def _head(model: nn.Module) -> str:
    name = type(model).__name__
    if name.endswith("LMHeadModel"):  # GPT-2's name for a causal LM
        return "CausalLM"
    for head in ("CausalLM", "SequenceClassification", "TokenClassification", "MaskedLM"):
        if name.endswith(f"For{head}"):
            return head
    raise NotExportable(f"{name}: no transformers auto class to reload it with")
