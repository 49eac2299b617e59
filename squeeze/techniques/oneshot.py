"""One-shot post-training techniques from a trained source: weight-only ``rtn``, ``gptq``, ``awq`` (int4/int8,
grouped), ``smoothquant`` (W8A8) and ``magnitude``, ``wanda``, ``sparsegpt`` pruning (X unstructured or N:M such as
2:4), on every Linear layer inside the transformer layers (embeddings, norms and task heads stay as they are; W8A8
quantizes every Linear, as DQ does, so the two differ by the smoothing alone).

Each is a stage like ``dq``: ``technique: [gptq]`` with ``source: {sweep: baseline, select: ...}``; the calibration
set is drawn from the source's train split (``params.<name>.calibration: {examples, max_length, seed}``). A list
composes them in order: ``[sparsegpt, gptq]`` is the SparseGPT paper's joint 50% + 4-bit (a weight that is exactly
zero stays zero through any of the quantizers), ``[imp, awq]`` quantizes an IMP model keeping its mask. Quantizers
produce the ``weight-only`` codec; pruners the ``torch`` codec's sparse form. The algorithms and their conventions
are in ``squeeze.oneshot.solvers``.
"""

from __future__ import annotations

import re
import time
from typing import Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from squeeze import families, formats
from squeeze.formats.base import set_module
from squeeze.formats.weight_only import QuantLinear
from squeeze.oneshot import calibrate, grid, solvers
from squeeze.oneshot.calibrate import Calibration
from squeeze.techniques.base import NoOp


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    calibration: Calibration = Field(default_factory=Calibration)


class QuantParams(_Params):
    bits: Literal[4, 8] = 4
    group_size: int = Field(128, description="inputs per scale: -1 (one per output row) or a multiple of 16")
    sym: bool = Field(False, description="symmetric grid (zero point 2**(bits-1)); false: a zero point per group")

    @field_validator("group_size")
    @classmethod
    def _group(cls, v):
        if v != -1 and (v < 16 or v % 16):
            raise ValueError(f"group_size must be -1 (per output row) or a multiple of 16 (32, 64, 128 ...), got {v}")
        return v


class GPTQParams(QuantParams):
    damp: float = Field(0.01, gt=0, le=1, description="dampening, a fraction of the mean Hessian diagonal")
    # on by default, as llm-compressor's GPTQModifier (actorder "static"): measured on SmolLM2-135M W4 g128 without it,
    # GPTQ came out worse than RTN (benchmarks/results/*-menu-quality.json)
    act_order: bool = Field(True, description="quantize inputs by decreasing Hessian diagonal (static groups)")


class AWQParams(QuantParams):
    grid: int = Field(20, ge=1, le=1000, description="exponents tried for the per-channel scale")


class PruneParams(_Params):
    sparsity: float = Field(0.5, ge=0, lt=1, description="fraction of each layer's weights set to zero")
    pattern: Optional[str] = Field(None, description="N:M, N zeros in every M consecutive inputs (2:4, 4:8)")

    @model_validator(mode="after")
    def _pattern(self):
        if self.pattern is None:
            return self
        match = re.fullmatch(r"(\d+):(\d+)", self.pattern)
        if not match or not 0 < int(match[1]) < int(match[2]) <= 64:
            raise ValueError(f"pattern: {self.pattern!r} is not N:M with 0 < N < M <= 64 (for example 2:4)")
        if "sparsity" in self.model_fields_set and abs(self.sparsity - int(match[1]) / int(match[2])) > 1e-9:
            raise ValueError(f"sparsity: {self.sparsity} disagrees with pattern {self.pattern} (N/M = "
                             f"{int(match[1]) / int(match[2])}); give one of them")
        self.sparsity = int(match[1]) / int(match[2])
        return self

    def nm(self) -> dict:
        if self.pattern is None:
            return {"sparsity": self.sparsity}
        n, m = map(int, self.pattern.split(":"))
        return {"n": n, "m": m}


class _OneShot(NoOp):
    post_training = True
    needs_source = "the sweep whose trained models it compresses"
    needs_family = True
    codec = "torch"
    uses_calibration = True
    needs_xtx = True
    acts_on_linear = True

    def finalize(self, model):
        batches = self._batches(next(model.parameters()).device) if self.uses_calibration else []
        model = self.compress(model, batches)
        if self.ctx is not None:
            self.ctx.info.update(self.info)
        return model

    def compress(self, model, batches: list[dict]):
        """Compress ``model`` in place with calibration ``batches`` (model inputs, one example each); returns the
        model marked with its codec. ``self.info`` holds what it measured (layers, seconds, sparsity, bits)."""
        from squeeze.techniques.dq import check_conv1d_conversion

        model = model.eval()
        converted = check_conv1d_conversion(model)
        start = time.perf_counter()
        self.info = {"oneshot/layers": 0.0}
        if self.uses_calibration:
            calibrate.walk(model, batches, self._process, self._stats)
            self.info["oneshot/calibration_examples"] = float(len(batches))
        else:
            for index, layer in enumerate(families.layer_list(model)):
                self._process(index, layer, {n: (lin, None) for n, lin in calibrate.layer_linears(layer).items()})
        if not self.info["oneshot/layers"]:  # never a no-op under the recipe's name
            raise ValueError(f"{self.name}: the model's transformer layers hold no nn.Linear layer to compress (a "
                             "quantized form replaced them before this technique ran)")
        self.info.update({"oneshot/seconds": time.perf_counter() - start, "quant/conv1d_converted": float(converted)})
        self.info.update(self._summary(model))
        return formats.mark(model, self.codec) if self.codec != "torch" else model

    def _batches(self, device) -> list[dict]:
        from squeeze.tasks.base import MODEL_KEYS, collate, to_device

        prepared = self.ctx.prepared
        keys = [k for k in MODEL_KEYS if k != "labels"]
        return [to_device(collate([f], prepared.pad_id, keys), device)
                for f in calibrate.examples(prepared.features["train"], self.p.calibration)]

    def _stats(self, name, linear):
        return calibrate.InputStats(linear.in_features, xtx=self.needs_xtx)

    def _process(self, index, layer, found) -> None:
        for name, (linear, stats) in found.items():
            self._layer(layer, name, linear, stats)
            self.info["oneshot/layers"] += 1

    def _summary(self, model) -> dict:
        return {}


def _zeros_of(linear) -> torch.Tensor:
    return linear.weight.detach().float().cpu() == 0


class _Quantizer(_OneShot):
    codec = "weight-only"
    replaces_linear = True

    def _quantize(self, name, linear, stats):
        """(integers, scales, zeros, input scale or None) of one layer."""
        raise NotImplementedError

    def _layer(self, layer, name, linear, stats) -> None:
        p = self.p
        q, scales, zeros, in_scale = self._quantize(name, linear, stats)
        set_module(layer, name, QuantLinear.from_quantized(linear, q, scales, zeros, bits=p.bits, group_size=p.group_size,
                                                     input_scale=in_scale))

    def _summary(self, model) -> dict:
        return {"quant/weight_only_layers": float(sum(isinstance(m, QuantLinear) for m in model.modules())),
                "quant/bits": float(self.p.bits), "quant/group_size": float(self.p.group_size)}


class RTN(_Quantizer):
    """Round to nearest on the grid: the baseline of every weight-only method (no calibration)."""

    name = "rtn"
    Params = QuantParams
    uses_calibration = False

    def _quantize(self, name, linear, stats):
        W = linear.weight.detach().float().cpu()
        q, scales, zeros = grid.rtn(W, self.p.bits, self.p.group_size, self.p.sym)
        return torch.where(_zeros_of(linear), grid.expand(zeros, self.p.group_size, W.shape[1]), q), scales, zeros, None


class GPTQ(_Quantizer):
    name = "gptq"
    Params = GPTQParams

    def _quantize(self, name, linear, stats):
        p = self.p
        q, scales, zeros, _ = solvers.gptq(linear.weight.detach().cpu(), stats.hessian(), bits=p.bits, group=p.group_size,
                                           sym=p.sym, percdamp=p.damp, act_order=p.act_order, pruned=_zeros_of(linear))
        return q, scales, zeros, None


class AWQ(_Quantizer):
    name = "awq"
    Params = AWQParams
    needs_xtx = False

    def _stats(self, name, linear):
        return calibrate.InputStats(linear.in_features, xtx=False, keep_rows=4096, seed=self.p.calibration.seed)

    def _quantize(self, name, linear, stats):
        p = self.p
        q, scales, zeros, s, a = solvers.awq(linear.weight.detach().cpu(), stats.abs_sum / max(stats.tokens, 1),
                                             stats.sample(), bits=p.bits, group=p.group_size, sym=p.sym, n_grid=p.grid)
        self.info["awq/mean_exponent"] = self.info.get("awq/mean_exponent", 0.0) + a
        held = _zeros_of(linear)  # a zero stays zero: W * s is zero there, so its integer is the zero point already
        return torch.where(held, grid.expand(zeros, p.group_size, q.shape[1]), q), scales, zeros, s

    def _summary(self, model):
        out = super()._summary(model)
        out["awq/mean_exponent"] = self.info.get("awq/mean_exponent", 0.0) / max(self.info["oneshot/layers"], 1)
        return out


class _Pruner(_OneShot):
    Params = PruneParams

    def _prune(self, linear, stats) -> torch.Tensor:
        raise NotImplementedError

    def _layer(self, layer, name, linear, stats) -> None:
        pattern = self.p.nm()
        if "m" in pattern and linear.in_features % pattern["m"]:
            raise ValueError(f"pattern {self.p.pattern}: layer {name} has {linear.in_features} inputs, not a multiple "
                             f"of {pattern['m']}")
        with torch.no_grad():
            linear.weight.copy_(self._prune(linear, stats).to(linear.weight.dtype))

    def _summary(self, model) -> dict:
        ws = [m.weight for layer in families.layer_list(model) for m in calibrate.layer_linears(layer).values()]
        zeros = sum(int((w == 0).sum()) for w in ws)
        return {"prune/sparsity": zeros / max(1, sum(w.numel() for w in ws)),
                "prune/n_m": float(self.p.pattern is not None)}


class Magnitude(_Pruner):
    name = "magnitude"
    uses_calibration = False

    def _prune(self, linear, stats):
        return solvers.magnitude(linear.weight.detach().cpu(), **self.p.nm())


class Wanda(_Pruner):
    name = "wanda"
    needs_xtx = False

    def _prune(self, linear, stats):
        return solvers.wanda(linear.weight.detach().cpu(), stats.sq_sum, **self.p.nm())


class SparseGPT(_Pruner):
    name = "sparsegpt"

    def _prune(self, linear, stats):
        return solvers.sparsegpt(linear.weight.detach().cpu(), stats.hessian(), **self.p.nm())


class SmoothQuantParams(_Params):
    alpha: float = Field(0.5, ge=0, le=1, description="migration strength: 0 keeps the activations, 1 moves all to W")


class SmoothQuant(_OneShot):
    """SmoothQuant W8A8 on the CPU: smooth every Linear of the transformer layers (fp32, output unchanged), then DQ's
    dynamic int8 of every Linear (int8 weights per tensor, activations quantized per call), served by torch.ao."""

    name = "smoothquant"
    Params = SmoothQuantParams
    codec = "smoothed-int8"
    replaces_linear = True
    needs_xtx = False
    eval_device = "cpu"

    @classmethod
    def check(cls, params, task, has_source):
        try:
            from torch.ao.quantization import quantize_dynamic  # noqa: F401
        except ImportError:
            raise ValueError(f"smoothquant: torch {torch.__version__} has no torch.ao dynamic quantization") from None

    def _layer(self, layer, name, linear, stats) -> None:
        from squeeze.formats.smoothed_int8 import InputScaled

        s = solvers.smooth_scales(stats.abs_max, linear.weight.detach().cpu(), self.p.alpha).to(linear.weight.device)
        with torch.no_grad():
            linear.weight.mul_(s)
        wrapped = InputScaled(linear, linear.in_features).to(linear.weight.device)
        wrapped.input_scale.copy_(s)
        set_module(layer, name, wrapped)

    def compress(self, model, batches):
        from squeeze import quant

        model = super().compress(model, batches)
        model = quant.dynamic_int8(model)
        counts = quant.count_quantized(model)
        if counts["quant/float_linear"]:
            raise AssertionError(f"{counts['quant/float_linear']} Linear layers are still fp32 after quantization")
        self.info.update(counts)
        return formats.mark(model, self.codec)


class Fp8Params(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    emulate: bool = Field(False, description="run where no fp8 GEMM exists (torch's reference kernel on the CPU or an "
                                             "older GPU): fp8's accuracy and size, no speed; off: refused there")


class Fp8(_OneShot):
    """fp8 W8A8 (llm-compressor's FP8_DYNAMIC): every Linear of the transformer layers as float8 e4m3 weights with a
    scale per output row, inputs quantized per token at run time (no calibration). Needs a CUDA GPU of compute
    capability >= 8.9, checked before Ray starts and again on the trial's device; ``emulate: true`` measures its
    accuracy elsewhere (the same arithmetic, torch's reference kernel)."""

    name = "fp8"
    Params = Fp8Params
    codec = "fp8"
    uses_calibration = False
    replaces_linear = True

    @classmethod
    def check_machine(cls, params, device: str, gpus: float, local: bool) -> None:
        from squeeze.formats import fp8

        if params.emulate:
            return
        if device == "cpu" or gpus <= 0:
            field = "train.device" if device == "cpu" else "resources.gpu"
            raise ValueError(f"{field}: {fp8.REQUIREMENT}; or set params.fp8.emulate: true to measure its accuracy "
                             "without one (no speed-up)")
        why = fp8.unsupported() if local else None  # on a cluster the trial checks its own GPU
        if why:
            raise ValueError(f"train.device: {fp8.REQUIREMENT}, and {why} (set RAY_ADDRESS to run on a cluster that "
                             "has one, or params.fp8.emulate: true)")

    def compress(self, model, batches):
        from squeeze.formats import fp8

        device = next(model.parameters()).device
        why = fp8.unsupported(device) if device.type == "cuda" else "the trial runs on the CPU"
        if why and not self.p.emulate:
            raise RuntimeError(f"fp8: {fp8.REQUIREMENT}; {why} (params.fp8.emulate: true measures its accuracy anyway)")
        return super().compress(model, batches)

    def _layer(self, layer, name, linear, stats) -> None:
        from squeeze.formats.fp8 import Fp8Linear

        try:
            set_module(layer, name, Fp8Linear.from_linear(linear))
        except ValueError as exc:
            raise ValueError(f"layer {name}: {exc}") from None

    def _summary(self, model) -> dict:
        from squeeze.formats.fp8 import layers_of

        return {"quant/fp8_layers": float(len(layers_of(model)))}
