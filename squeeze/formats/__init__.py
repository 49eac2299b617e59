"""Stored forms of a model (codecs): each knows how to save, load, size and serve the models it describes.

A technique's ``finalize()`` returns its model marked with the codec that stores it (``mark(model, "weight-only")``);
an unmarked model is the ``torch`` codec's (dense, sparse, ``torch.ao`` dynamic int8, int8 embeddings). Nothing else
in squeeze inspects a model's classes to learn what was done to it: the recipe, the latency pass, the MLflow pyfunc
flavour and ``squeeze.load`` ask the codec. Adding a stored form is one module here plus one line in ``CODECS``.

Every folder holds ``squeeze_format.json`` naming its codec (folders written before codecs existed name none and are
read as they were: ``backend: onnxruntime`` by ``onnx-int8``, the rest by ``torch``).

    from squeeze import formats
    formats.save(model, folder, auto_class="AutoModelForSequenceClassification", task="sentiment")
    model = formats.load(folder)                   # the model, bit for bit
    serving = formats.of(model).serving(model)     # the model in the runtime that serves its format (timed there)
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

from squeeze.formats.base import FORMAT_FILE, Codec, read_format  # noqa: F401  (re-exported)

CODECS: dict[str, str] = {
    "torch": "squeeze.formats.torch_native:TorchCodec",
    "onnx-int8": "squeeze.formats.onnx_int8:OnnxInt8Codec",
    "weight-only": "squeeze.formats.weight_only:WeightOnlyCodec",
    "smoothed-int8": "squeeze.formats.smoothed_int8:SmoothedInt8Codec",
    "fp8": "squeeze.formats.fp8:Fp8Codec",
}
CODEC_ATTR = "squeeze_codec"


def get(name: str) -> Codec:
    """The codec registered as ``name``.

    Raises:
        ValueError: naming the registered codecs when ``name`` is unknown.
    """
    if name not in CODECS:
        raise ValueError(f"unknown model format {name!r}; known: {', '.join(sorted(CODECS))}")
    module, attr = CODECS[name].split(":")
    return getattr(importlib.import_module(module), attr)()


def mark(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """Say which codec stores ``model`` (what a technique's ``finalize`` produced); returns the model."""
    get(name)  # an unknown name fails here, in the technique, not when the trial saves
    object.__setattr__(model, CODEC_ATTR, name)
    return model


def of(model: torch.nn.Module) -> Codec:
    """The codec of a model: the one its technique marked, else ``torch``."""
    return get(getattr(model, CODEC_ATTR, "torch"))


def codec_name(fmt: dict) -> str:
    """The codec a ``squeeze_format.json`` names (older folders: inferred as the release that wrote them did)."""
    if "codec" in fmt:
        return fmt["codec"]
    return "onnx-int8" if fmt.get("backend") == "onnxruntime" else "torch"


def save(model: torch.nn.Module, directory: str | Path, *, auto_class: str, task: str | None = None) -> Path:
    """Write ``model`` to ``directory`` in its codec's form, with ``squeeze_format.json`` and a README."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    codec = of(model)
    fmt = {"codec": codec.name, "auto_class": auto_class, "task": task, **codec.save(model, d)}
    (d / FORMAT_FILE).write_text(json.dumps(fmt, indent=1))
    (d / "README.md").write_text(codec.readme(fmt))
    return d


def load(directory: str | Path) -> torch.nn.Module:
    """Rebuild a model saved by ``save`` (or by an earlier release), marked with its codec.

    Raises:
        ValueError: when the folder is not a model squeeze can read.
    """
    d = Path(directory)
    fmt = read_format(d)
    name = codec_name(fmt)
    return mark(get(name).load(d, fmt), name)


def weights_path(directory: str | Path) -> Path:
    """The weight file of a saved folder."""
    d = Path(directory)
    fmt = read_format(d)
    return d / get(codec_name(fmt)).weights_file(fmt)


def disk_bytes(directory: str | Path) -> int:
    """Bytes of the weight file on disk (config files excluded)."""
    return weights_path(directory).stat().st_size


def stored_bytes(directory: str | Path, names) -> int:
    """Bytes the named tensors take inside a safetensors weight file (bitmask + values when stored sparse)."""
    from safetensors import safe_open

    total = 0
    with safe_open(weights_path(directory), "pt") as f:
        keys = set(f.keys())
        for name in names:
            parts = [f"{name}.__mask", f"{name}.__values"] if f"{name}.__mask" in keys else [name]
            total += sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in parts if k in keys)
    return total
