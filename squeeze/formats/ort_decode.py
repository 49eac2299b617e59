"""Greedy decoding of a causal LM on ONNX Runtime with its key/value cache, fp32 or with weight-only layers as
``MatMulNBits`` (the CPU's int4/int8 GEMM): the runtime a decoder's int4 speed-up is measured in.

The graph is one decoding step, ``(input_ids [1, 1], position_ids [1, 1], past keys/values) -> (logits of the token,
present keys/values)``, traced from the model with the cache as plain tensors (a ``DynamicCache`` rebuilt inside the
step) and dynamic in the cache's length; a prompt is fed one token at a time. Batch 1 and no padding: the step takes no
attention mask. A trace that froze a length would give wrong logits silently, so every export is checked against the
model's own full-sequence forward (weight-only layers computing with their dequantized weights, as in torch) at every
position of a sequence longer than the one traced (``CHECK_TOKENS``); a graph that differs by more than ``TOLERANCE``
(relative to the logits' scale) is refused.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from squeeze.formats.base import set_module
from squeeze.formats.decoding import cache_arg, cache_of
from squeeze.formats.ort_nbits import NotServable, _Dequantized, to_nbits
from squeeze.formats.weight_only import quant_layers

TRACE_PAST = 3
CHECK_TOKENS = 12
TOLERANCE = 1e-3


class _Step(nn.Module):
    def __init__(self, model: nn.Module, layers: int):
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=True, **{cache_arg(self.model): cache})
        present = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        return (out.logits[:, -1], *present)


def _cache_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(heads, head dim) of each cached tensor, read from a one-token forward (no config arithmetic to get wrong)."""
    with torch.no_grad():
        out = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True)
    layers = getattr(cache_of(out), "layers", None)
    if not layers:
        raise NotServable(f"{type(model).__name__} keeps no per-layer key/value cache to export")
    return [(t.shape[1], t.shape[3]) for layer in layers for t in (layer.keys, layer.values)]


class OrtDecoder:
    """A decoding-step graph in an ONNX Runtime session (see the module docstring)."""

    def __init__(self, data: bytes, shapes: list[tuple[int, int]], threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        self.shapes = shapes
        self.past_names = [i.name for i in self.session.get_inputs()][2:]
        self.nbits = sum(n.op_type == "MatMulNBits" for n in _graph(data).node)

    def empty(self) -> list[np.ndarray]:
        return [np.zeros((1, h, 0, d), np.float32) for h, d in self.shapes]

    def step(self, token: int, position: int, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feed = {"input_ids": np.array([[token]], np.int64), "position_ids": np.array([[position]], np.int64),
                **dict(zip(self.past_names, past))}
        logits, *present = self.session.run(None, feed)
        return logits[0], present

    def logits(self, tokens: list[int]) -> np.ndarray:
        """The logits at every position of ``tokens``, one step at a time: [len(tokens), vocab]."""
        past, rows = self.empty(), []
        for pos, tok in enumerate(tokens):
            row, past = self.step(int(tok), pos, past)
            rows.append(row)
        return np.stack(rows)

    def generate(self, prompt: list[int], new_tokens: int) -> tuple[list[int], float]:
        """Greedy continuation of ``prompt`` by ``new_tokens`` tokens, and the seconds spent after the prompt (the first
        new token comes from the prompt's last step; each further one costs one step)."""
        if not prompt or new_tokens < 1:
            raise ValueError("generate needs a non-empty prompt and at least one new token")
        past = self.empty()
        for pos, tok in enumerate(prompt):
            row, past = self.step(int(tok), pos, past)
        out = [int(row.argmax())]
        t0 = time.perf_counter()
        for pos in range(len(prompt), len(prompt) + new_tokens - 1):
            row, past = self.step(out[-1], pos, past)
            out.append(int(row.argmax()))
        return out, time.perf_counter() - t0


def _graph(data: bytes):
    import onnx

    return onnx.load_from_string(data).graph


def _export(model: nn.Module, shapes: list[tuple[int, int]], path: Path) -> Path:
    past = [torch.zeros(1, h, TRACE_PAST, d) for h, d in shapes]
    n = len(shapes) // 2
    past_names = [f"past.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    axes = {**{p: {2: "past"} for p in past_names}, **{p: {2: "total"} for p in present}}
    with torch.no_grad():
        # the wrapper in eval mode: the exporter restores the wrapper's mode on every submodule after the trace
        torch.onnx.export(_Step(model, n).eval(), (torch.zeros(1, 1, dtype=torch.long), torch.full((1, 1), TRACE_PAST), *past),
                          str(path), dynamo=False, input_names=["input_ids", "position_ids", *past_names],
                          output_names=["logits", *present], opset_version=17, dynamic_axes=axes)
    return path


def _check(decoder: OrtDecoder, model: nn.Module, tokens: torch.Tensor, what: str) -> float:
    with torch.no_grad():
        want = model(input_ids=tokens).logits[0].float().numpy()
    got = decoder.logits(tokens[0].tolist())
    diff = float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))
    if diff > TOLERANCE:
        raise NotServable(f"the ONNX decoding graph's logits differ from {what} by {diff:.3g} (relative to their scale) "
                          f"over {tokens.shape[1]} positions: not serving it")
    return diff


def serve(model: nn.Module, *, threads: int | None = None, seed: int = 0) -> OrtDecoder:
    """``model`` (a causal LM, on any device; exported from a CPU copy) as an ``OrtDecoder``: fp32, or with its
    weight-only layers as MatMulNBits nodes holding the layer's own integers, scales and zero points.

    Raises:
        NotServable: when the model cannot be exported or the graph does not give the model's logits.
    """
    plain = copy.deepcopy(model).to("cpu").eval()
    for t in [*plain.parameters(), *plain.buffers()]:
        if t.is_floating_point():
            t.data = t.data.float()  # not ``.float()``: transformers refuses it on a model marked quantized
    layers = quant_layers(plain)
    for name, layer in layers.items():
        set_module(plain, name, _Dequantized(layer))
    shapes = _cache_shapes(plain)
    tokens = torch.randint(0, plain.config.vocab_size, (1, CHECK_TOKENS), generator=torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # a frozen shape is caught by ``_check`` below
        path = _export(plain, shapes, Path(tmp) / "step.onnx")
        data = to_nbits(path, layers) if layers else path.read_bytes()
    decoder = OrtDecoder(data, shapes, threads)
    if layers and decoder.nbits != len(layers):
        raise NotServable(f"{decoder.nbits} MatMulNBits nodes for {len(layers)} weight-only layers")
    decoder.check_diff = _check(decoder, plain, tokens, "the torch model's")
    return decoder
