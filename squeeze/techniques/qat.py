"""Quantization-aware fine-tuning, embeddings included (the paper's PyTorch could not).

During training every Linear carries int8 fake quantization of its weight (per tensor) and
input (per batch), and every Embedding an int8 per-row fake quantization of its weight, all
with straight-through gradients. At the end the model becomes a real int8 model (dynamic int8
Linear + int8 embeddings) and is evaluated on CPU like DQ.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from squeeze import quant
from squeeze.techniques.base import NoOp
from squeeze.techniques.dq import check_conv1d_conversion, quantize


class QATParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    embeddings: bool = True


class QAT(NoOp):
    name = "qat"
    Params = QATParams
    eval_device = "cpu"
    acts_on_linear = replaces_linear = True

    def prepare(self, model):
        check_conv1d_conversion(model)
        self.handles = quant.add_fake_quant(model, embeddings=self.p.embeddings)
        if self.ctx is not None:
            self.ctx.info["quant/fake_quant_modules"] = quant.fake_quant_modules(model)
        return model

    def finalize(self, model):
        quant.remove_fake_quant(model, self.handles)
        model, counts = quantize(model, self.p.embeddings)
        if self.ctx is not None:
            self.ctx.info.update({k: v for k, v in counts.items() if k != "quant/conv1d_converted"})
        return model
