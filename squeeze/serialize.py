"""Save and load dense, int8 and sparse models in one self-describing folder, on safetensors.

Folder: ``config.json`` (the transformers config), ``squeeze_format.json`` (what was done to the
model: Conv1D->Linear, int8 Linear, int8 embeddings, which tensors are sparse, the task) and the
weights. Int8 Linear layers store their int8 weights with scale and zero point; a tensor that is
mostly zeros is stored as a bitmask plus its non-zero values (of its own dtype), whenever that is
smaller than dense. Loading rebuilds the same modules and gives bit-identical outputs. Nothing is
unpickled.

A plain float model is a standard Hugging Face folder (``model.safetensors``): ``from_pretrained``
loads it. Any other (int8, sparse, Conv1D converted) keeps its weights in ``squeeze.safetensors``,
so ``from_pretrained`` refuses it (no ``model.safetensors``) instead of silently initialising the
layers it cannot read; ``squeeze.load(folder)`` and the folder's MLflow pyfunc flavour read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file

from squeeze import quant

FORMAT_FILE = "squeeze_format.json"
PLAIN, PACKED = "model.safetensors", "squeeze.safetensors"


def _qlinear_cls():
    from torch.ao.nn.quantized.dynamic import Linear

    return Linear


_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _nonzero_bits(t: torch.Tensor) -> torch.Tensor:
    """Entries whose bits are not all zero: ``-0.0`` is kept as a value (its sign bit survives the round trip)."""
    flat = t.flatten()
    return flat.view(_BITS[t.element_size()]) != 0 if t.is_floating_point() else flat != 0


def _sparse_pays(t: torch.Tensor) -> bool:
    if t.numel() < 64 or t.dtype == torch.bool:
        return False
    nnz = int(_nonzero_bits(t).sum())
    return nnz * t.element_size() + t.numel() / 8 < 0.9 * t.numel() * t.element_size()


def _pack(name: str, t: torch.Tensor, out: dict, sparse: dict, allow_sparse: bool = True) -> None:
    t = t.detach().to("cpu").contiguous()
    if allow_sparse and _sparse_pays(t):
        flat = t.flatten()
        mask = _nonzero_bits(t)
        out[f"{name}.__mask"] = torch.from_numpy(np.packbits(mask.numpy()))
        out[f"{name}.__values"] = flat[mask].clone()
        sparse[name] = list(t.shape)
    else:
        out[name] = t.clone()


def _unpack(tensors: dict, sparse: dict) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in tensors.items() if not k.endswith((".__mask", ".__values"))}
    for name, shape in sparse.items():
        n = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(tensors[f"{name}.__mask"].numpy(), count=n).astype(bool))
        values = tensors[f"{name}.__values"]
        flat = torch.zeros(n, dtype=values.dtype)
        flat[mask] = values
        out[name] = flat.reshape(shape)
    return out


def _pruned(model: torch.nn.Module, share: float = 0.05) -> bool:
    """Are at least ``share`` of the model's weights zero (an IMP model), int8 layers included?"""
    zeros = total = 0
    for t in list(model.state_dict().values()):
        if isinstance(t, torch.Tensor) and t.is_quantized:
            t = t.int_repr()
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.dtype == torch.int8):
            zeros += int((t == 0).sum())
            total += t.numel()
    for m in model.modules():
        if isinstance(m, _qlinear_cls()):  # dynamic int8 Linear: its weights live in packed params
            w = m.weight().int_repr()
            zeros, total = zeros + int((w == 0).sum()), total + w.numel()
    return total > 0 and zeros / total >= share


def save(model: torch.nn.Module, directory: str | Path, *, auto_class: str, conv1d_to_linear: bool = False,
         task: str | None = None) -> Path:
    """Write ``model`` (dense, sparse, int8 or both; or an ONNX Runtime int8 graph) to ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if getattr(model, "onnx_bytes", None) is not None:
        from squeeze import onnxrt

        onnxrt.save(model, d)
        fmt = {"auto_class": model.auto_class, "task": task, "weights": onnxrt.ONNX_FILE, "backend": "onnxruntime"}
        (d / FORMAT_FILE).write_text(json.dumps(fmt, indent=1))
        (d / "README.md").write_text(_readme(fmt))
        return d
    QLinear = _qlinear_cls()
    tensors, sparse, qnames = {}, {}, []
    pruned = _pruned(model)  # only a pruned model is stored sparse: a zero bias alone keeps a plain HF folder
    for name, m in model.named_modules():
        if isinstance(m, QLinear):
            w = m.weight()
            _pack(f"{name}.qweight", w.int_repr(), tensors, sparse, pruned)
            tensors[f"{name}.qscale"] = torch.tensor([w.q_scale()], dtype=torch.float64)
            tensors[f"{name}.qzero"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
            if m.bias() is not None:
                tensors[f"{name}.bias"] = m.bias().detach().clone()
            qnames.append(name)
    first, tied = {}, {}
    for k, v in model.state_dict().items():
        if isinstance(v, torch.Tensor) and not v.is_quantized and not any(k.startswith(q + ".") for q in qnames):
            where = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
            if where in first:  # a tied weight (GPT-2's lm_head is its wte): stored once
                tied[k] = first[where]
                continue
            first[where] = k
            _pack(k, v, tensors, sparse, pruned)
    int8_emb = any(isinstance(m, quant.Int8Embedding) for m in model.modules())
    plain = not (qnames or sparse or int8_emb or conv1d_to_linear)
    weights = PLAIN if plain else PACKED
    save_file(tensors, d / weights)
    model.config.save_pretrained(d)
    fmt = {"auto_class": auto_class, "task": task, "weights": weights, "conv1d_to_linear": conv1d_to_linear,
           "int8_linear": qnames, "int8_embeddings": int8_emb, "sparse": sparse, "tied": tied}
    (d / FORMAT_FILE).write_text(json.dumps(fmt, indent=1))
    (d / "README.md").write_text(_readme(fmt))
    return d


def _readme(fmt: dict) -> str:
    if fmt.get("backend") == "onnxruntime":
        return (f"# A model saved by squeeze\n\nAn int8 ONNX graph (ONNX Runtime dynamic quantization): "
                f"`onnxruntime.InferenceSession(\"{fmt['weights']}\")` runs it; inputs are the tokenizer's "
                f"input_ids and attention_mask (and token_type_ids where the model has them), output the logits."
                f"\n\n```python\nimport squeeze\nmodel = squeeze.load(folder)\n\nimport mlflow\n"
                f"model = mlflow.pyfunc.load_model(folder)  # predicts on a DataFrame of texts\n```\n")
    kinds = [k for k, on in (("int8 Linear layers", fmt["int8_linear"]), ("int8 embeddings", fmt["int8_embeddings"]),
                             ("sparse tensors (bitmask + values)", fmt["sparse"]),
                             ("GPT-2 Conv1D layers as Linear", fmt["conv1d_to_linear"])) if on]
    how = ("It is a plain float model: `transformers.{0}.from_pretrained(folder)` loads it too.".format(fmt["auto_class"])
           if not kinds else f"It holds {', '.join(kinds)}, which transformers cannot read: its weights are in "
                             f"`{PACKED}`, so `from_pretrained` refuses the folder instead of loading random layers.")
    return (f"# A model saved by squeeze\n\n{how}\n\n```python\nimport squeeze\nmodel = squeeze.load(folder)"
            f"             # the model, bit for bit\n\nimport mlflow\nmodel = mlflow.pyfunc.load_model(folder)  # "
            f"predicts on a DataFrame of texts\n```\n")


def weights_path(directory: str | Path) -> Path:
    """The weight file of a saved folder (``model.safetensors`` for a plain model, else ``squeeze.safetensors``)."""
    d = Path(directory)
    for name in (PACKED, "model.int8.onnx"):
        if (d / name).is_file():
            return d / name
    return d / PLAIN


def read_format(directory: str | Path) -> dict:
    """The ``squeeze_format.json`` of a saved model folder.

    Raises:
        ValueError: when the folder was not written by ``save``.
    """
    d = Path(directory)
    if not (d / FORMAT_FILE).is_file():
        raise ValueError(f"{d}: no {FORMAT_FILE}; not a model saved by squeeze")
    return json.loads((d / FORMAT_FILE).read_text())


def load(directory: str | Path) -> torch.nn.Module:
    """Rebuild a model saved by ``save`` (or a plain ``save_pretrained`` folder).

    Raises:
        ValueError: when the folder is not a model squeeze can read.
    """
    d = Path(directory)
    fmt = read_format(d)
    if fmt.get("backend") == "onnxruntime":
        from squeeze import onnxrt

        return onnxrt.load(d, fmt["auto_class"])
    config = transformers.AutoConfig.from_pretrained(d)
    model = getattr(transformers, fmt["auto_class"]).from_config(config)
    if fmt["conv1d_to_linear"]:
        quant.conv1d_to_linear(model)
    if fmt["int8_embeddings"]:
        quant.quantize_embeddings(model)
    if fmt["int8_linear"]:
        model = quant.dynamic_int8(model)
    tensors = _unpack(load_file(weights_path(d)), fmt["sparse"])
    QLinear = _qlinear_cls()
    modules = dict(model.named_modules())
    for name in fmt["int8_linear"]:
        m = modules[name]
        if not isinstance(m, QLinear):
            raise ValueError(f"{d}: layer {name} should be int8 after loading but is {type(m).__name__}")
        qw = torch._make_per_tensor_quantized_tensor(tensors.pop(f"{name}.qweight"), float(tensors.pop(f"{name}.qscale")),
                                                     int(tensors.pop(f"{name}.qzero")))
        m.set_weight_bias(qw, tensors.pop(f"{name}.bias", None))
    # quantized modules reject load_state_dict without their packed params: copy the rest directly
    targets = dict(model.named_parameters(remove_duplicate=False))
    targets.update(dict(model.named_buffers(remove_duplicate=False)))
    expected = [k for k, v in model.state_dict().items() if isinstance(v, torch.Tensor) and not v.is_quantized
                and not any(k.startswith(q + ".") for q in fmt["int8_linear"])]
    tied = fmt.get("tied", {})
    missing = [k for k in expected if k not in tensors and k not in tied]
    unexpected = [k for k in tensors if k not in targets]
    with torch.no_grad():
        for k, v in tensors.items():
            if k in targets:
                targets[k].copy_(v)
        for alias, src in tied.items():  # tied again by from_config, or copied when the config does not tie
            if alias in targets and targets[alias] is not targets[src]:
                targets[alias].copy_(targets[src])
    if missing or unexpected:
        raise ValueError(f"{d}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()


def stored_bytes(directory: str | Path, names) -> int:
    """Bytes the named tensors take inside the weight file (bitmask + values when stored sparse)."""
    from safetensors import safe_open

    total = 0
    with safe_open(weights_path(directory), "pt") as f:
        keys = set(f.keys())
        for name in names:
            parts = [f"{name}.__mask", f"{name}.__values"] if f"{name}.__mask" in keys else [name]
            total += sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in parts)
    return total


def embedding_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the embedding tables' tensors (word, position, token type), fp32 or int8, as ``save`` stores them."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Embedding, quant.Int8Embedding)):
            names += [f"{name}.{k}" for k in dict(m.named_parameters(recurse=False)) | dict(m.named_buffers(recurse=False))]
    return names


def disk_bytes(directory: str | Path) -> int:
    """Bytes of the weight file on disk (config files excluded)."""
    return weights_path(directory).stat().st_size
