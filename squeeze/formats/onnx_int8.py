"""The ``onnx-int8`` codec. DQ through ONNX Runtime: export a fine-tuned classifier to ONNX, quantize it with ONNX Runtime's dynamic int8
(``quantize_dynamic``: int8 weights, activations quantized per call, the counterpart of ``torch.ao``'s DQ), and run,
evaluate, measure and save it through an ``InferenceSession``, so the latency a report shows is the one a
deployment on ONNX Runtime sees (``params.dq.backend: onnxruntime``).

``OrtModel`` is a ``torch.nn.Module`` only so that the task's evaluation, the latency measurement and the MLflow
flavour call it like any model: it takes the tokenizer's tensors and returns an output with ``.logits``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from squeeze.formats.base import LOAD_SNIPPET

ONNX_FILE = "model.int8.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        return False
    return True


class OrtModel(torch.nn.Module):
    """An ONNX classifier behind an ONNX Runtime session whose thread count follows ``torch.set_num_threads``
    (as ``squeeze.measure`` sets it), CPU only."""

    squeeze_codec = "onnx-int8"

    def __init__(self, onnx_bytes: bytes, config: transformers.PretrainedConfig, auto_class: str):
        super().__init__()
        self.onnx_bytes, self.config, self.auto_class = onnx_bytes, config, auto_class
        self._session, self._threads = None, 0

    def _run(self, feed: dict):
        import onnxruntime as ort

        threads = torch.get_num_threads()
        if self._session is None or threads != self._threads:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            self._session = ort.InferenceSession(self.onnx_bytes, opts, providers=["CPUExecutionProvider"])
            self._threads = threads
            self._names = [i.name for i in self._session.get_inputs()]
        return self._session.run(None, {k: feed[k] for k in self._names})[0]

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_):
        feed = {"input_ids": input_ids, "attention_mask": attention_mask if attention_mask is not None
                else torch.ones_like(input_ids), "token_type_ids": token_type_ids if token_type_ids is not None
                else torch.zeros_like(input_ids)}
        logits = torch.from_numpy(self._run({k: v.cpu().numpy() for k, v in feed.items()}))
        return transformers.modeling_outputs.SequenceClassifierOutput(logits=logits)

    def to(self, *args, **kwargs):  # CPU only: a request for another device is answered with the CPU model
        return self

    def size_metrics(self) -> dict[str, float]:
        """Parameter and non-zero counts and bytes of the graph's weights (int8 counted as stored)."""
        import numpy as np
        import onnx
        from onnx import numpy_helper

        arrays = [numpy_helper.to_array(t) for t in onnx.load_from_string(self.onnx_bytes).graph.initializer]
        weights = [a for a in arrays if a.size > 1]  # scales and zero points are single values
        return {"size/params": float(sum(a.size for a in weights)),
                "size/nonzero": float(sum(int(np.count_nonzero(a)) for a in weights)),
                "size/memory_mb": sum(a.nbytes for a in arrays) / 2**20}

    def embedding_bytes(self) -> int:
        import onnx

        return sum(len(t.raw_data) or 0 for t in onnx.load_from_string(self.onnx_bytes).graph.initializer
                   if "embeddings" in t.name)

    def counts(self) -> dict[str, float]:
        """int8 and float weight MatMuls of the graph (activation x activation MatMuls of attention excluded)."""
        import onnx

        graph = onnx.load_from_string(self.onnx_bytes).graph
        weights = {t.name for t in graph.initializer}
        ops = [n.op_type for n in graph.node]
        float_linear = sum(1 for n in graph.node if n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input))
        return {"quant/int8_linear": float(ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul")),
                "quant/float_linear": float(float_linear), "quant/int8_embeddings": float(
                    any(n.op_type == "DequantizeLinear" and "embeddings" in " ".join(n.input) for n in graph.node))}


def export_checked(model: torch.nn.Module, example: dict[str, torch.Tensor], check: dict[str, torch.Tensor],
                   path: Path) -> Path:
    """Export ``model`` (a token or sequence classifier) to an fp32 ONNX graph at ``path`` with dynamic batch and
    length, traced on ``example``; the graph must then give the model's own logits on ``check``, a batch of another
    size and length (a trace that froze a shape or a mask fails here, not in a report).

    Raises:
        AssertionError: when the exported graph's logits differ from the model's on ``check``.
    """
    import onnxruntime as ort

    model = model.to("cpu").eval()
    names = [k for k in INPUTS if k in example]
    axes = {0: "batch", 1: "length"}
    with torch.no_grad():
        torch.onnx.export(model, tuple(example[k] for k in names), str(path), dynamo=False, input_names=names,
                          output_names=["logits"], opset_version=17, dynamic_axes={k: axes for k in names})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    kept = [i.name for i in session.get_inputs()]
    if "attention_mask" in names and "attention_mask" not in kept:
        raise AssertionError("the ONNX export changed the fp32 logits on a batch of shape "
                             f"{tuple(check['input_ids'].shape)}: the trace dropped the attention mask")
    got = session.run(None, {k: check[k].numpy() for k in kept})[0]
    with torch.no_grad():
        want = model(**{k: check[k] for k in names}).logits.numpy()
    diff = float(abs(got - want).max())
    if diff > 1e-3:
        raise AssertionError(f"the ONNX export changed the fp32 logits on a batch of shape "
                             f"{tuple(check['input_ids'].shape)} (max diff {diff:.3g}): not quantizing it")
    return path


def head_of(model: torch.nn.Module) -> str:
    auto = type(model).__name__
    return "AutoModelForTokenClassification" if "TokenClassification" in auto else "AutoModelForSequenceClassification"


def quantize(model: torch.nn.Module, example: dict[str, torch.Tensor], check: dict[str, torch.Tensor], *,
             embeddings: bool) -> OrtModel:
    """Export ``model`` (``export_checked``), quantize its weight MatMuls (and, with ``embeddings``, its embedding
    Gathers) to int8 with ONNX Runtime, and wrap the result.

    Raises:
        AssertionError: when the exported fp32 graph's logits differ from the model's on ``check``.
    """
    import logging
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = export_checked(model, example, check, Path(tmp) / "model.onnx"), Path(tmp) / ONNX_FILE
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(max(level, logging.ERROR))  # its root-logger "consider pre-processing" warning: noise here
        try:
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gather"] if embeddings else ["MatMul"])
        finally:
            root.setLevel(level)  # only for this call: the rest of the process keeps its warnings
        data = int8.read_bytes()
    return OrtModel(data, model.config, head_of(model))


class OnnxInt8Codec:
    """An int8 ONNX graph, served by ONNX Runtime on the CPU (what ``OrtModel`` runs is what is timed)."""

    name = "onnx-int8"
    runtime = "onnxruntime dynamic int8 (MatMulInteger, CPU)"
    devices = ("cpu",)

    def save(self, model: OrtModel, directory: Path) -> dict:
        (directory / ONNX_FILE).write_bytes(model.onnx_bytes)
        model.config.save_pretrained(directory)
        return {"weights": ONNX_FILE, "backend": "onnxruntime"}

    def load(self, directory: Path, fmt: dict) -> OrtModel:
        return OrtModel((directory / ONNX_FILE).read_bytes(), transformers.AutoConfig.from_pretrained(directory),
                        fmt["auto_class"])

    def weights_file(self, fmt: dict) -> str:
        return ONNX_FILE

    def size(self, model: OrtModel) -> dict[str, float]:
        return model.size_metrics()

    def embedding_bytes(self, model: OrtModel, directory: Path) -> int:
        return model.embedding_bytes()

    def serving(self, model, example=None):
        return model, self.runtime

    def decoder(self, model, threads=None):
        return None, "not measured: an int8 ONNX graph here is a classifier (no decoding step)"

    def readme(self, fmt: dict) -> str:
        return (f"# A model saved by squeeze\n\nAn int8 ONNX graph (ONNX Runtime dynamic quantization): "
                f"`onnxruntime.InferenceSession(\"{fmt['weights']}\")` runs it; inputs are the tokenizer's "
                f"input_ids and attention_mask (and token_type_ids where the model has them), output the logits."
                f"\n\n{LOAD_SNIPPET}")


def example_batch(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Real examples, padded (the export traces on two of them; it is checked on five)."""
    from squeeze.tasks.base import collate

    batch = collate(features, pad_id)
    return {k: batch[k] for k in INPUTS if k in batch}
