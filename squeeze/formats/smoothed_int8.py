"""The ``smoothed-int8`` codec: SmoothQuant's W8A8 on the CPU, as ``torch.ao`` dynamic int8 Linear layers whose
inputs are first divided by a per-channel smoothing scale (``InputScaled``).

Everything else is the ``torch`` codec's int8 form; this module only adds the ``input_scale`` buffers and rebuilds
the wrappers before the int8 layers are loaded. Served by ``torch.ao``'s fbgemm int8 GEMMs (the division is one
elementwise multiply per layer).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from squeeze.formats import torch_native
from squeeze.formats.base import LOAD_SNIPPET, set_module


class InputScaled(nn.Module):
    """``linear(x / input_scale)``: a Linear whose weight was multiplied by ``input_scale`` per input channel."""

    def __init__(self, linear: nn.Module, in_features: int):
        super().__init__()
        self.linear = linear
        self.register_buffer("input_scale", torch.ones(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x / self.input_scale)


class SmoothedInt8Codec(torch_native.TorchBacked):
    name = "smoothed-int8"
    runtime = "torch.ao dynamic int8 (fbgemm/qnnpack int8 GEMMs, CPU) after a per-channel input scale"
    devices = ("cpu",)

    def save(self, model, directory: Path) -> dict:
        scaled = {n: int(m.input_scale.numel()) for n, m in model.named_modules() if isinstance(m, InputScaled)}
        if not scaled:
            raise ValueError("a model marked smoothed-int8 holds no InputScaled layer")
        return {**torch_native.write(model, directory, plain_ok=False), "input_scaled": scaled}

    def load(self, directory: Path, fmt: dict):
        def swap(model):
            for name, n in fmt["input_scaled"].items():
                set_module(model, name, InputScaled(model.get_submodule(name), n))

        return torch_native.read(directory, fmt, swap)

    def serving(self, model, example=None):
        return model, self.runtime

    def readme(self, fmt: dict) -> str:
        return (f"# A model saved by squeeze\n\nSmoothQuant W8A8: {len(fmt['input_scaled'])} int8 Linear layers "
                f"(torch.ao dynamic int8) whose inputs are divided by a stored per-channel `input_scale`; its weights are "
                f"in `{fmt['weights']}`, which transformers cannot read.\n\n{LOAD_SNIPPET}")
