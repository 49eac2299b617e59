"""Post-training dynamic int8 quantization of every Linear layer, for CPU inference.

Two backends: ``torch`` (``torch.ao`` dynamic int8 Linear, the paper's method) and ``onnxruntime`` (the model
exported to ONNX and quantized by ONNX Runtime, ``squeeze.formats.onnx_int8``; evaluated, measured and saved as ``.onnx``):
the latency a report shows is then the one an ONNX Runtime deployment sees. ``auto`` builds both (where ONNX Runtime
runs the model: a classifier, the package installed), times each at batch 1 on the same test examples, rounds
interleaved, and keeps the faster: which runtime is faster depends on the model and the CPU (measured here: ONNX
Runtime 2.36x torch's fp32 on MiniLM at batch 1 where torch.ao gave 1.62x). It logs both timings and its pick.

GPT-2's ``Conv1D`` layers are converted to ``nn.Linear`` first (checked exact in fp32), else
``quantize_dynamic`` silently leaves every transformer block in fp32. The number of int8
layers is logged; a quantized model whose blocks are still float raises.
"""

from __future__ import annotations

import torch
from typing import Literal

from pydantic import BaseModel, ConfigDict

from squeeze import families, quant
from squeeze.techniques.base import NoOp


class DQParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # also int8 (weight-only, per row) embeddings, as QAT's default, so DQ and QAT sizes compare like with like;
    # false reproduces the paper's DQ, whose PyTorch left the embeddings in fp32
    embeddings: bool = True
    backend: Literal["torch", "onnxruntime", "auto"] = "torch"


def check_conv1d_conversion(model: torch.nn.Module) -> int:
    """Convert Conv1D -> Linear and verify the fp32 outputs are identical on a fixed input.

    Raises:
        AssertionError: if the converted model's logits differ.
    """
    if not families.has_conv1d(model):
        return 0
    model.eval()
    ids = torch.arange(0, 12).remainder(model.config.vocab_size).unsqueeze(0).to(next(model.parameters()).device)
    with torch.no_grad():
        before = model(input_ids=ids).logits
        n = quant.conv1d_to_linear(model)
        after = model(input_ids=ids).logits
    if not torch.allclose(before, after, rtol=0, atol=1e-5):
        raise AssertionError(f"Conv1D -> Linear changed the fp32 logits (max diff {(before - after).abs().max():.3g})")
    return n


def quantize(model: torch.nn.Module, embeddings: bool) -> tuple[torch.nn.Module, dict]:
    """Conv1D -> Linear, optional int8 embeddings, dynamic int8 Linear; returns the model and counts.

    int8 dynamic quantization runs on the CPU: a model trained on a GPU comes to the CPU first (the conversion
    check included)."""
    model = model.to("cpu").eval()
    converted = check_conv1d_conversion(model)
    if embeddings:
        quant.quantize_embeddings(model)
    model = quant.dynamic_int8(model)
    counts = quant.count_quantized(model)
    if counts["quant/float_linear"]:
        raise AssertionError(f"{counts['quant/float_linear']} Linear layers are still fp32 after quantization")
    counts["quant/conv1d_converted"] = converted
    return model, counts


class DQ(NoOp):
    name = "dq"
    Params = DQParams
    post_training = True
    needs_source = "the sweep whose fine-tuned models it quantizes"
    eval_device = "cpu"
    acts_on_linear = replaces_linear = True

    @classmethod
    def check(cls, params, task, has_source):
        from squeeze.formats import onnx_int8 as onnxrt

        if params.backend == "torch":
            try:  # deprecated in torch: the day a torch drops it, say so before any trial, with the way out
                from torch.ao.quantization import quantize_dynamic  # noqa: F401
            except ImportError:
                import torch

                raise ValueError(f"params.dq.backend: torch {torch.__version__} has no torch.ao dynamic quantization; "
                                 "use backend: onnxruntime (classifiers) or a torch that has it") from None
        if params.backend == "onnxruntime":
            if "Classification" not in task.auto_class:
                raise ValueError(f"params.dq.backend: onnxruntime runs classifier heads (sequence or token "
                                 f"classification); task {task.name!r} uses {task.auto_class}: use backend torch")
            if not onnxrt.available():
                raise ValueError("params.dq.backend: onnxruntime needs `pip install onnxruntime onnx` "
                                 "(or `pip install squeeze[onnx]`)")

    def _onnxruntime(self, model):
        from squeeze.formats import onnx_int8 as onnxrt

        prepared = self.ctx.prepared
        feats = prepared.features
        return onnxrt.quantize(model, onnxrt.example_batch(feats["train"][:2], prepared.pad_id),
                               onnxrt.example_batch(feats["test"][:5], prepared.pad_id), embeddings=self.p.embeddings)

    def _ort_runs(self, model) -> bool:
        from squeeze.formats import onnx_int8 as onnxrt

        return self.ctx is not None and "Classification" in type(model).__name__ and onnxrt.available()

    def finalize(self, model):
        if self.p.backend == "auto" and self._ort_runs(model):
            return self._auto(model)
        if self.p.backend == "onnxruntime":
            model = self._onnxruntime(model)
            self.ctx.info.update({**model.counts(), "quant/conv1d_converted": 0.0})
            return model
        model, counts = quantize(model, self.p.embeddings)
        if self.ctx is not None:
            self.ctx.info.update({**counts, **({"dq/auto_onnxruntime": 0.0} if self.p.backend == "auto" else {})})
        return model

    def _auto(self, model):
        """Both int8 forms of ``model`` (ONNX Runtime's first: torch's quantizes in place), timed at batch 1 on the
        same 8 test examples in 2 interleaved rounds; the faster is kept and both timings logged."""
        from squeeze import measure
        from squeeze.formats import onnx_int8 as onnxrt

        ort = self._onnxruntime(model)
        tq, counts = quantize(model, self.p.embeddings)
        prepared = self.ctx.prepared
        batches = [onnxrt.example_batch([f], prepared.pad_id) for f in prepared.features["test"][:8]]

        def run(m):
            def go():
                with torch.no_grad():
                    for b in batches:
                        m(**b)
            return go

        best = {"torch": float("inf"), "onnxruntime": float("inf")}
        for _ in range(2):
            for name, m in (("onnxruntime", ort), ("torch", tq)):
                ms = measure.time_cpu(run(m), warmup=1, repeats=3)["median_ms"] / len(batches)
                best[name] = min(best[name], ms)
        pick = "onnxruntime" if best["onnxruntime"] < best["torch"] else "torch"
        timing = {"dq/auto_torch_ms": best["torch"], "dq/auto_onnxruntime_ms": best["onnxruntime"],
                  "dq/auto_onnxruntime": float(pick == "onnxruntime")}
        if pick == "onnxruntime":
            self.ctx.info.update({**ort.counts(), "quant/conv1d_converted": 0.0, **timing})
            return ort
        self.ctx.info.update({**counts, **timing})
        return tq
