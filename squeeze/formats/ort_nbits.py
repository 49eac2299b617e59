"""Serve a weight-only model on ONNX Runtime's ``MatMulNBits`` (com.microsoft), the CPU's int4/int8 GEMM.

The model is exported with each ``QuantLinear`` standing as an fp32 Linear of its dequantized weight (an AWQ input
scale as a division before it); every MatMul whose weight is one of those layers' is then replaced by a MatMulNBits
node holding the layer's own integers, scales and zero points: the graph computes ``(q - zero) * scale`` from the
same bytes the folder stores. The served graph must give the torch model's logits (1e-3), else it is not served.

Operator layout (onnxruntime/core/graph/contrib_ops, MatMulNBits): B is uint8 [N, blocks, block_size * bits / 8]
(4 bits: low nibble first), scales float [N * blocks], zero_points uint8 [N * ceil(blocks * bits / 8)] (4 bits: low
nibble first), attributes K, N, bits, block_size (a power of two >= 16). A group of g inputs is served as blocks of the
largest power of two <= 128 that divides g (each block repeats its group's scale and zero point: exact).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeeze.formats.base import set_module
from squeeze.formats.weight_only import QuantLinear, quant_layers


class NotServable(Exception):
    """The model cannot be served by MatMulNBits (why is in the message)."""


class _Dequantized(nn.Module):
    def __init__(self, layer: QuantLinear):
        super().__init__()
        self.weight = nn.Parameter(layer.dequantized().contiguous(), requires_grad=False)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.clone(), requires_grad=False)
        self.input_scale = layer.input_scale

    def forward(self, x):
        if self.input_scale is not None:
            x = x / self.input_scale
        return F.linear(x, self.weight, self.bias)


def block_size(group: int, in_features: int) -> int:
    """The MatMulNBits block for a group of ``group`` inputs (see the module docstring).

    Raises:
        NotServable: when no power of two >= 16 fits the groups.
    """
    if group >= in_features:  # one group per row: any block repeats the row's scale
        return max(16, min(128, 1 << max(0, (in_features - 1).bit_length())))
    b = 128
    while b >= 16 and group % b:
        b //= 2
    if b < 16:
        raise NotServable(f"groups of {group} inputs are not a multiple of 16")
    return b


def nbits_initializers(layer: QuantLinear, name: str) -> tuple[list, dict]:
    """The B, scales and zero_points tensors of one layer, and the node's attributes."""
    from onnx import numpy_helper

    K, N, bits = layer.in_features, layer.out_features, layer.bits
    b = block_size(layer.group_size, K)
    blocks = math.ceil(K / b)
    q = layer.int_weight().numpy().astype(np.uint8)                          # [N, K]
    group_of_block = np.minimum((np.arange(blocks) * b) // layer.group_size, layer.scales.shape[1] - 1)
    zp_of_block = layer.zeros.numpy()[:, group_of_block]                      # [N, blocks]
    padded = np.repeat(zp_of_block, b, axis=1)[:, :blocks * b].copy()         # padding holds the zero point: adds 0
    padded[:, :K] = q
    qb = padded.reshape(N, blocks, b)
    if bits == 4:
        qb = qb[:, :, 0::2] | (qb[:, :, 1::2] << 4)
        zp = zp_of_block if blocks % 2 == 0 else np.concatenate([zp_of_block, np.zeros((N, 1), np.uint8)], 1)
        zp = zp[:, 0::2] | (zp[:, 1::2] << 4)
    else:
        zp = zp_of_block
    scales = layer.scales.numpy()[:, group_of_block].astype(np.float32)
    tensors = [numpy_helper.from_array(qb.astype(np.uint8), f"{name}.B"),
               numpy_helper.from_array(scales.reshape(-1), f"{name}.scales"),
               numpy_helper.from_array(zp.astype(np.uint8).reshape(-1), f"{name}.zero_points")]
    return tensors, {"K": K, "N": N, "bits": bits, "block_size": b}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def to_nbits(graph_path: Path, layers: dict[str, QuantLinear]) -> bytes:
    """Replace the MatMuls whose weight is a layer's dequantized weight by MatMulNBits nodes; returns the model bytes.

    Raises:
        NotServable: when a layer's MatMul is not found in the graph.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(graph_path))
    graph = model.graph
    by_digest = {_digest(m.dequantized().numpy().T): (n, m) for n, m in layers.items()}
    inits = {t.name: t for t in graph.initializer}
    found, new_nodes = set(), []
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        hit = by_digest.get(_digest(numpy_helper.to_array(w))) if w is not None and len(w.dims) == 2 else None
        if hit is None:
            new_nodes.append(node)
            continue
        name, layer = hit
        tensors, attrs = nbits_initializers(layer, name)
        graph.initializer.extend(tensors)
        new_nodes.append(helper.make_node("MatMulNBits", [node.input[0]] + [t.name for t in tensors], list(node.output),
                                          name=f"{name}.MatMulNBits", domain="com.microsoft", **attrs))
        found.add(name)
    missing = sorted(set(layers) - found)
    if missing:
        raise NotServable(f"no MatMul in the exported graph holds the weights of {missing[:3]}")
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model.SerializeToString()


def serve(model: nn.Module, example: dict[str, torch.Tensor]):
    """The model as an ``OrtModel`` whose weight-only layers run as MatMulNBits.

    Raises:
        NotServable: when it cannot be (the reason in the message).
    """
    import copy

    from squeeze.formats import onnx_int8

    layers = quant_layers(model)
    for layer in layers.values():
        block_size(layer.group_size, layer.in_features)
    plain = copy.deepcopy(model).to("cpu").eval()
    for name, layer in quant_layers(plain).items():
        set_module(plain, name, _Dequantized(layer))
    check = {k: v[:1] for k, v in example.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = onnx_int8.export_checked(plain, example, check, Path(tmp) / "fp32.onnx")
        data = to_nbits(path, {n: m.cpu() for n, m in layers.items()})
    served = onnx_int8.OrtModel(data, model.config, onnx_int8.head_of(model))
    object.__setattr__(served, "squeeze_codec", "weight-only")
    with torch.no_grad():
        want = plain(**example).logits
        got = served(**example).logits
    diff = float((got - want).abs().max())
    if diff > 1e-3:
        raise NotServable(f"the MatMulNBits graph's logits differ from the torch model's by {diff:.3g}")
    return served
