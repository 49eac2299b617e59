"""The ``weight-only`` codec: int4/int8 weights in groups along the input dimension, one scale and one integer zero
point per group, as GPTQ, AWQ and RTN produce them (``squeeze.oneshot``).

A quantized layer is a ``QuantLinear``: ``qweight`` (4-bit values packed two per byte, low nibble first, or one byte
each at 8 bits), ``scales`` and ``zeros`` of shape [out, groups], the bias, and (AWQ) an ``input_scale`` the input is
divided by. Its weight is ``(q - zero) * scale``, exactly what ONNX Runtime's ``MatMulNBits`` computes from the same
bytes, so the CPU deployment serves the very integers that were evaluated: ``serving`` exports the model to ONNX and
swaps each layer's MatMul for a ``MatMulNBits`` holding its packed weights (classifier heads; the graph must agree
with the torch model). In torch the layer dequantizes once and runs an fp32 GEMM: no speed-up there, and the latency
line says so. The rest of the model is stored as the ``torch`` codec stores it (``squeeze.safetensors``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.formats import torch_native
from squeeze.formats.base import LOAD_SNIPPET, set_module

BITS = (4, 8)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Integers in [0, 2**bits) of shape [rows, cols] -> uint8 bytes (4 bits: two per byte, low nibble first)."""
    q = q.to(torch.uint8)
    if bits == 8:
        return q.contiguous()
    if q.shape[1] % 2:
        q = torch.cat([q, torch.zeros(q.shape[0], 1, dtype=torch.uint8)], 1)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """The inverse of ``pack``: uint8 values of shape [rows, cols]."""
    if bits == 8:
        return packed[:, :cols]
    out = torch.stack([packed & 0x0F, packed >> 4], dim=2).reshape(packed.shape[0], -1)
    return out[:, :cols]


class QuantLinear(nn.Module):
    """A Linear whose weight is stored as grouped int4/int8 values (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, *, bits: int, group_size: int, bias: bool,
                 input_scale: bool = False):
        super().__init__()
        if bits not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {bits}")
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        self.group_size = group_size if group_size > 0 else in_features
        groups = math.ceil(in_features / self.group_size)
        self.register_buffer("qweight", torch.zeros(out_features, math.ceil(in_features * bits / 8), dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, groups))
        self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("input_scale", torch.ones(in_features) if input_scale else None)
        self._weight = None

    @classmethod
    def from_quantized(cls, linear: nn.Linear, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *,
                       bits: int, group_size: int, input_scale: torch.Tensor | None = None) -> "QuantLinear":
        """A layer from integer weights ``q`` [out, in], per-group ``scales`` and integer ``zeros`` [out, groups]."""
        out = cls(linear.in_features, linear.out_features, bits=bits, group_size=group_size,
                  bias=linear.bias is not None, input_scale=input_scale is not None)
        if int(q.min()) < 0 or int(q.max()) >= 2 ** bits:
            raise ValueError(f"quantized values outside [0, {2 ** bits}) for {bits} bits")
        out.qweight.copy_(pack(q.cpu(), bits))
        out.scales.copy_(scales.float().cpu())
        out.zeros.copy_(zeros.round().to(torch.uint8).cpu())
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach().float().cpu())
        if input_scale is not None:
            out.input_scale.copy_(input_scale.float().cpu())
        return out.to(linear.weight.device)

    def int_weight(self) -> torch.Tensor:
        return unpack(self.qweight, self.bits, self.in_features)

    def dequantized(self) -> torch.Tensor:
        """``(q - zero) * scale`` per group: the weight the layer computes with (before any input scale)."""
        g = self.group_size
        scales = self.scales.repeat_interleave(g, dim=1)[:, :self.in_features]
        zeros = self.zeros.float().repeat_interleave(g, dim=1)[:, :self.in_features]
        return (self.int_weight().float() - zeros) * scales

    @property
    def weight(self) -> torch.Tensor:  # the effective weight, for code that reads ``.weight`` (sparsity counts)
        w = self.dequantized()
        return w / self.input_scale if self.input_scale is not None else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._weight is None or self._weight.device != x.device:
            self._weight = self.dequantized().to(x.device)
        if self.input_scale is not None:
            x = x / self.input_scale
        return F.linear(x, self._weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def _apply(self, fn, *args, **kwargs):
        self._weight = None  # a move or cast makes the cached dequantized weight stale
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, input_scale={self.input_scale is not None}")


def quant_layers(model: nn.Module) -> dict[str, QuantLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


class WeightOnlyCodec(torch_native.TorchBacked):
    name = "weight-only"
    runtime = "onnxruntime MatMulNBits (CPU, classifier heads); torch dequantize + fp32 GEMM elsewhere"
    devices = ("cpu", "cuda")

    def save(self, model, directory: Path) -> dict:
        layers = {n: {"in": m.in_features, "out": m.out_features, "bits": m.bits, "group_size": m.group_size,
                      "bias": m.bias is not None, "input_scale": m.input_scale is not None}
                  for n, m in quant_layers(model).items()}
        if not layers:
            raise ValueError("a model marked weight-only holds no QuantLinear layer")
        return {**torch_native.write(model, directory, plain_ok=False), "weight_only": layers}

    def load(self, directory: Path, fmt: dict):
        def swap(model):
            for name, spec in fmt["weight_only"].items():
                set_module(model, name, QuantLinear(spec["in"], spec["out"], bits=spec["bits"], group_size=spec["group_size"],
                                              bias=spec["bias"], input_scale=spec["input_scale"]))

        return torch_native.read(directory, fmt, swap)

    def size(self, model) -> dict[str, float]:
        tensors = list(torch_native.tensors_of(model))
        out = torch_native.size_of(tensors)
        layers = quant_layers(model).values()  # packed weights count as their values, not their bytes
        out["size/params"] += sum(m.in_features * m.out_features - m.qweight.numel() for m in layers)
        out["size/nonzero"] += sum(int((m.dequantized() != 0).sum()) - int(torch.count_nonzero(m.qweight)) for m in layers)
        return out

    def serving(self, model, example=None):
        from squeeze.formats import ort_nbits

        torch_line = "torch dequantize + fp32 GEMM: no int4/int8 kernel, no speed-up here (smaller on disk only)"
        if example is None or "Classification" not in type(model).__name__:
            return model, torch_line
        try:
            return ort_nbits.serve(model, example), "onnxruntime MatMulNBits (CPU)"
        except ort_nbits.NotServable as exc:
            return model, f"{torch_line}; not served by ONNX Runtime: {exc}"

    def decoder(self, model, threads=None):
        from squeeze.formats import ort_decode, ort_nbits
        from squeeze.formats.decoding import TorchDecoder

        try:
            return ort_decode.serve(model, threads=threads), "onnxruntime MatMulNBits (CPU), key/value cache in the graph"
        except ort_nbits.NotServable as exc:
            return TorchDecoder(model.to("cpu")), f"torch dequantize + fp32 GEMM; not served by ONNX Runtime: {exc}"

    def readme(self, fmt: dict) -> str:
        bits = sorted({v["bits"] for v in fmt["weight_only"].values()})
        groups = sorted({v["group_size"] for v in fmt["weight_only"].values()})
        return (f"# A model saved by squeeze\n\n{len(fmt['weight_only'])} Linear layers hold int{'/int'.join(map(str, bits))} "
                f"weights in groups of {', '.join(map(str, groups))} inputs (uint8 `qweight`, 4-bit values two per byte, "
                f"low nibble first; `scales` and integer `zeros` per group; weight = (q - zero) * scale). Its weights "
                f"are in `{fmt['weights']}`, which transformers cannot read.\n\n{LOAD_SNIPPET}")
