"""Conv1D -> Linear, and the fake quantization QAT trains through.

The int8 forms QAT and DQ produce (dynamic int8 Linear, int8 embeddings) are the ``torch`` codec's and live in
``squeeze.formats.torch_native``; they are imported here for the techniques that build them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from squeeze.formats.torch_native import (QMAX, Int8Embedding, count_quantized,  # noqa: F401
                                         dynamic_int8, is_int8, quantize_embeddings, row_scale)


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace GPT-2's ``Conv1D`` (y = x W + b, W of shape [in, out]) by ``nn.Linear`` in place.

    Returns:
        the number of modules replaced.
    """
    from transformers.pytorch_utils import Conv1D

    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                lin = nn.Linear(child.weight.shape[0], child.weight.shape[1], bias=child.bias is not None)
                with torch.no_grad():
                    lin.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        lin.bias.copy_(child.bias)
                setattr(module, child_name, lin.to(child.weight.device, child.weight.dtype))
                count += 1
    return count


class FakeQuantWeight(nn.Module):
    """Int8 fake quantization of a weight with a straight-through gradient, exactly as the deployed kernel rounds.

    ``per_row``: one scale per row, max|w|/127 over [-127, 127], as ``Int8Embedding`` stores it. Otherwise one scale
    per tensor, as ``quantize_dynamic``'s weight observer (``MinMaxObserver``, qint8, per-tensor symmetric) computes
    it: max|w| / 127.5 over [-128, 127] (a 1/127 scale would simulate another kernel).
    """

    def __init__(self, per_row: bool):
        super().__init__()
        self.per_row = per_row

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.per_row:
            scale, lo, hi = row_scale(w.detach()), -QMAX, QMAX
        else:
            scale, lo, hi = (w.detach().abs().max() / 127.5).clamp(min=torch.finfo(torch.float32).eps), -128, 127
        q = torch.clamp(torch.round(w / scale), lo, hi) * scale
        return w + (q - w).detach()


ACT_QMIN, ACT_QMAX = 0, 127  # fbgemm's dynamic int8 Linear quantizes its input to 7 bits (reduce_range=True)


def _fake_quant_input(module, args):
    """Per-batch asymmetric 7-bit fake quantization of a Linear input, as the x86 (fbgemm) dynamic int8 Linear does at
    run time: range widened to include 0, scale (max - min) / 127, and fbgemm's choice of zero point (from whichever
    end of the range loses less precision), rounded and clamped to [0, 127]."""
    x = args[0]
    lo, hi = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
    scale = (hi - lo) / (ACT_QMAX - ACT_QMIN)
    scale = torch.where(scale == 0, torch.full_like(scale, 0.1), scale)
    from_min, from_max = ACT_QMIN - lo / scale, ACT_QMAX - hi / scale
    closer = (abs(ACT_QMIN) + (lo / scale).abs()) < (abs(ACT_QMAX) + (hi / scale).abs())
    zp = torch.where(closer, from_min, from_max).round().clamp(ACT_QMIN, ACT_QMAX)
    q = (torch.clamp(torch.round(x / scale) + zp, ACT_QMIN, ACT_QMAX) - zp) * scale
    return (x + (q - x).detach(),) + tuple(args[1:])


def add_fake_quant(model: nn.Module, embeddings: bool = True) -> list:
    """Register fake quantization on every Linear (weights and inputs) and, optionally, Embedding.

    Returns:
        the input hooks' handles (``remove_fake_quant`` takes them back); one per Linear.
    """
    handles = []
    for module in model.modules():
        if type(module) is nn.Linear:
            parametrize.register_parametrization(module, "weight", FakeQuantWeight(per_row=False))
            handles.append(module.register_forward_pre_hook(_fake_quant_input))
        elif embeddings and type(module) is nn.Embedding:
            parametrize.register_parametrization(module, "weight", FakeQuantWeight(per_row=True))
    return handles


def fake_quant_modules(model: nn.Module) -> int:
    return sum(parametrize.is_parametrized(m, "weight") for m in model.modules())


def remove_fake_quant(model: nn.Module, handles) -> None:
    """Drop the fake-quant parametrizations and the input hooks, keeping the float weights."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    for handle in handles:
        handle.remove()
