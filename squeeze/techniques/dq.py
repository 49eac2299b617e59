"""Post-training dynamic int8 quantization of every Linear layer, for CPU inference.

GPT-2's ``Conv1D`` layers are converted to ``nn.Linear`` first (checked exact in fp32), else
``quantize_dynamic`` silently leaves every transformer block in fp32. The number of int8
layers is logged; a quantized model whose blocks are still float raises.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from squeeze import families, quant
from squeeze.techniques.base import NoOp


class DQParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # also int8 (weight-only, per row) embeddings, as QAT's default, so DQ and QAT sizes compare like with like;
    # false reproduces the paper's DQ, whose PyTorch left the embeddings in fp32
    embeddings: bool = True


def check_conv1d_conversion(model: torch.nn.Module) -> int:
    """Convert Conv1D -> Linear and verify the fp32 outputs are identical on a fixed input.

    Raises:
        AssertionError: if the converted model's logits differ.
    """
    if not families.has_conv1d(model):
        return 0
    model.eval()
    ids = torch.arange(0, 12).remainder(model.config.vocab_size).unsqueeze(0)
    with torch.no_grad():
        before = model(input_ids=ids).logits
        n = quant.conv1d_to_linear(model)
        after = model(input_ids=ids).logits
    if not torch.allclose(before, after, rtol=0, atol=1e-5):
        raise AssertionError(f"Conv1D -> Linear changed the fp32 logits (max diff {(before - after).abs().max():.3g})")
    return n


def quantize(model: torch.nn.Module, embeddings: bool) -> tuple[torch.nn.Module, dict]:
    """Conv1D -> Linear, optional int8 embeddings, dynamic int8 Linear; returns the model and counts."""
    converted = check_conv1d_conversion(model)
    model = model.to("cpu").eval()
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

    def finalize(self, model):
        model, counts = quantize(model, self.p.embeddings)
        self.conv1d_to_linear = bool(counts["quant/conv1d_converted"])
        if self.ctx is not None:
            self.ctx.info.update(counts)
        return model
