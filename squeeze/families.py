"""Model families: where each architecture keeps its transformer layers, declared once.

PKD (student depth, hidden states), IMP (prunable weights), DQ/QAT (Conv1D layers) and
serialization ask this module; no other module holds a layer path. A family is matched by the
model's ``config.model_type``; an architecture that is not listed gets an error naming what is
missing and how to add it.

Conventions every family shares (transformers' own): ``output_hidden_states=True`` returns the
embedding output at index 0 and the output of layer i at index i; ``config.num_hidden_layers``
is the depth (an alias of ``n_layer``/``n_layers`` where a config names it otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


class UnknownFamily(ValueError):
    """A model architecture squeeze has no layer map for."""


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]          # config.model_type values of this family
    layers: str                           # dotted path from ``model.base_model`` to the ModuleList of layers
    pooled: Literal["first", "last"]      # the token a sequence-classification head reads
    conv1d: bool = False                  # GPT-2's transposed ``Conv1D`` instead of ``nn.Linear``
    decoder: bool = False                 # causal LM: left-to-right, no [CLS]
    token_types: bool = True              # its forward takes token_type_ids (dialogue's speaker segments)


FAMILIES: tuple[Family, ...] = (
    Family("bert", ("bert",), "encoder.layer", "first"),
    Family("roberta", ("roberta", "xlm-roberta"), "encoder.layer", "first"),
    Family("distilbert", ("distilbert",), "transformer.layer", "first", token_types=False),
    Family("gpt2", ("gpt2",), "h", "last", conv1d=True, decoder=True),
    Family("llama", ("llama",), "layers", "last", decoder=True, token_types=False),
)


def family_of_type(model_type: str | None) -> Family | None:
    """The family of a ``config.model_type``, or None when no family declares it."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def family_of(model_or_config) -> Family:
    """The family of a model or config.

    Raises:
        UnknownFamily: naming the model type and what a family declares.
    """
    config = getattr(model_or_config, "config", model_or_config)
    mtype = getattr(config, "model_type", None)
    fam = family_of_type(mtype)
    if fam is not None:
        return fam
    known = sorted(t for f in FAMILIES for t in f.model_types)
    raise UnknownFamily(f"model type {mtype!r} is not a known family (known: {', '.join(known)}); squeeze needs to "
                        "know where its transformer layers are: add a Family to squeeze/families.py")


def _walk(root: nn.Module, dotted: str) -> nn.Module:
    for attr in dotted.split("."):
        root = getattr(root, attr)
    return root


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The model's transformer layers, in order."""
    return _walk(model.base_model, family_of(model).layers)


def depth(model: nn.Module) -> int:
    return len(layer_list(model))


def truncate(model: nn.Module, k: int) -> nn.Module:
    """Keep the embeddings, the first ``k`` layers and the heads (in place): the PKD student.

    Raises:
        ValueError: when ``k`` exceeds the model's depth.
    """
    fam, layers = family_of(model), layer_list(model)
    if k > len(layers):
        raise ValueError(f"student depth {k} exceeds the model's {len(layers)} layers")
    parent, _, last = fam.layers.rpartition(".")
    setattr(_walk(model.base_model, parent) if parent else model.base_model, last, nn.ModuleList(list(layers)[:k]))
    model.config.num_hidden_layers = k
    if isinstance(getattr(model.config, "layer_types", None), list):  # per-layer attention kinds (newer decoders)
        model.config.layer_types = model.config.layer_types[:k]
    return model


def is_linear_like(module: nn.Module) -> bool:
    """``nn.Linear`` or GPT-2's ``Conv1D`` (same role, transposed weight)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def has_conv1d(model: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) for m in model.modules())


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights IMP prunes: Linear/Conv1D weights inside the transformer layers.

    Embeddings, LayerNorm/RMSNorm, biases, the pooler and the task heads are left alone.
    """
    layers = layer_list(model)
    prefix = {id(m): n for n, m in model.named_modules()}[id(layers)]
    return {f"{n}.weight": m.weight for n, m in model.named_modules()
            if is_linear_like(m) and n.startswith(prefix + ".")}


def pooled_positions(model_or_config, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the token a sequence head reads: the first ([CLS]) or the last non-padding one."""
    if family_of(model_or_config).pooled == "first":
        return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
    return attention_mask.long().sum(-1) - 1


def tied_embeddings(model: nn.Module) -> bool:
    """Does the output head share its weight with the input embeddings (GPT-2, SmolLM2)?"""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return out is not None and out.weight is model.get_input_embeddings().weight
