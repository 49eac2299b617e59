"""The ``fp8`` codec: W8A8 float8 (e4m3) Linear layers, llm-compressor's ``FP8_DYNAMIC`` scheme.

A layer is an ``Fp8Linear``: ``weight`` in ``float8_e4m3fn`` [out, in] with one fp32 ``weight_scale`` per output row
(symmetric, ``scale = max|W_row| / 448``, compressed-tensors' ``calculate_qparams`` for float8), and the bias in fp32.
Each call quantizes its input per token the same way (``scale = max|x_token| / 448``, dynamic) and multiplies the two
float8 matrices with ``torch._scaled_mm`` (row-wise scales, fp32 accumulation): on a CUDA GPU of compute capability
>= 8.9 (Ada, Hopper, Blackwell) that is the fp8 tensor-core GEMM that serving runtimes use; on the CPU it is torch's
reference kernel, which computes the same products (measured equal to fp32 arithmetic on the dequantized operands),
slower than fp32: accuracy only, no speed-up there, and the latency line says so.

Everything else is stored as the ``torch`` codec stores it (``squeeze.safetensors``, float8 tensors as safetensors'
F8_E4M3).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from squeeze.formats import torch_native
from squeeze.formats.base import LOAD_SNIPPET, set_module

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
EPS = 1e-12                            # an all-zero row or token keeps a finite scale (its values stay 0)
CAPABILITY = (8, 9)                    # the first CUDA compute capability with fp8 tensor cores (Ada)
MULTIPLE = 16                          # torch._scaled_mm's rule for a layer's inputs and outputs


def unsupported(device: torch.device | str | None = None) -> str | None:
    """Why this machine (or ``device``) has no fp8 GEMM, or None when it has one. The hardware boundary: tests that
    run the CUDA path on a CPU machine replace this function and say so."""
    if not torch.cuda.is_available():
        return "this machine has no CUDA GPU"
    index = torch.device(device).index if device is not None and torch.device(device).type == "cuda" else None
    major, minor = torch.cuda.get_device_capability(index)
    if (major, minor) < CAPABILITY:
        return (f"{torch.cuda.get_device_name(index)} has compute capability {major}.{minor}, below "
                f"{CAPABILITY[0]}.{CAPABILITY[1]}")
    return None


REQUIREMENT = ("fp8 runs on a CUDA GPU of compute capability >= 8.9 (L4, L40S, RTX 4090, H100, H200, B200): "
               "train.device cuda (or auto) with resources.gpu > 0")


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x`` [rows, cols] as float8 e4m3 and their fp32 scales [rows, 1]: ``x ~= q * scale``, ``scale =
    max|row| / 448`` (symmetric, the row's largest value maps to 448 exactly), rounded to nearest even by the cast."""
    x = x.float()
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=EPS) / FP8_MAX
    return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    # CUDA's row-wise scaled GEMM writes bf16 (torch <= 2.7 accepts nothing else); the CPU's writes fp32 exactly
    return torch.float32 if x.device.type == "cpu" else torch.bfloat16


class Fp8Linear(nn.Module):
    """A Linear with float8 e4m3 weights (a scale per output row) and float8 inputs (a scale per token, per call)."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=FP8))
        self.register_buffer("weight_scale", torch.ones(out_features, 1))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Fp8Linear":
        if linear.in_features % MULTIPLE or linear.out_features % MULTIPLE:
            raise ValueError(f"fp8: a Linear of {linear.in_features} inputs and {linear.out_features} outputs; the fp8 "
                             f"GEMM needs both to be multiples of {MULTIPLE}")
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        q, scale = quantize(linear.weight.detach())
        out.weight.copy_(q)
        out.weight_scale.copy_(scale)
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach().float())
        return out.to(linear.weight.device)

    def dequantized(self) -> torch.Tensor:
        """``q * scale``: the fp32 weight the layer multiplies by."""
        return self.weight.float() * self.weight_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xq, xs = quantize(x.reshape(-1, self.in_features))
        if x.device.type == "cuda" and unsupported(x.device):  # an older GPU: the same products, dequantized
            y = (xq.float() * xs) @ self.dequantized().t()
        else:
            y = torch._scaled_mm(xq, self.weight.t(), scale_a=xs, scale_b=self.weight_scale.t(),
                                 out_dtype=_out_dtype(x)).float()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def layers_of(model: nn.Module) -> dict[str, Fp8Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, Fp8Linear)}


class Fp8Codec(torch_native.TorchBacked):
    name = "fp8"
    runtime = "torch._scaled_mm float8 e4m3 (CUDA tensor cores, compute capability >= 8.9)"
    devices = ("cpu", "cuda")

    def save(self, model, directory: Path) -> dict:
        layers = {n: {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None}
                  for n, m in layers_of(model).items()}
        if not layers:
            raise ValueError("a model marked fp8 holds no Fp8Linear layer")
        return {**torch_native.write(model, directory, plain_ok=False), "fp8": layers}

    def load(self, directory: Path, fmt: dict):
        def swap(model):
            for name, spec in fmt["fp8"].items():
                set_module(model, name, Fp8Linear(spec["in"], spec["out"], bias=spec["bias"]))

        return torch_native.read(directory, fmt, swap)

    def serving(self, model, example=None):
        device = next(model.buffers()).device
        why = unsupported(device) if device.type == "cuda" else "the CPU has no fp8 GEMM"
        if why is None:
            return model, self.runtime
        return model, f"torch._scaled_mm's reference fp8 kernel: {why}, no speed-up here (accuracy and size only)"

    def readme(self, fmt: dict) -> str:
        return (f"# A model saved by squeeze\n\nfp8 W8A8 (llm-compressor's FP8_DYNAMIC scheme): {len(fmt['fp8'])} Linear "
                "layers hold float8 e4m3 weights with one fp32 `weight_scale` per output row (max|row| / 448); their "
                "inputs are quantized per token at run time. Its weights are in "
                f"`{fmt['weights']}`, which transformers cannot read as they are; "
                "`squeeze.formats.compressed_tensors.export` writes the folder vLLM serves.\n\n" + LOAD_SNIPPET)
