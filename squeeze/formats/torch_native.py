"""The ``torch`` codec: dense, sparse, ``torch.ao`` dynamic int8 and int8-embedding models on safetensors.

Folder: ``config.json`` (the transformers config), ``squeeze_format.json`` (Conv1D->Linear, int8 Linear, int8
embeddings, which tensors are sparse, the task) and the weights. Int8 Linear layers store their int8 weights with
scale and zero point; a tensor that is mostly zeros is stored as a bitmask plus its non-zero values (of its own dtype),
whenever that is smaller than dense. Loading rebuilds the same modules and gives bit-identical outputs. Nothing is
unpickled.

A plain float model is a standard Hugging Face folder (``model.safetensors``): ``from_pretrained`` loads it. Any other
(int8, sparse, Conv1D converted) keeps its weights in ``squeeze.safetensors``, so ``from_pretrained`` refuses it (no
``model.safetensors``) instead of silently initialising the layers it cannot read; ``squeeze.load(folder)`` and the
folder's MLflow pyfunc flavour read it.

The int8 building blocks of this form live here too: ``dynamic_int8`` (backend choice, measured in benchmarks/:
``torch.ao.quantization.quantize_dynamic`` is deprecated but runs int8 GEMMs on x86 CPUs, 1.44x fp32 on MiniLM at 2
threads; torchao's ``Int8DynamicActivationInt8WeightConfig`` ran 17-22x *slower* than fp32 on the same CPU) and
``Int8Embedding``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn

from squeeze.formats.base import LOAD_SNIPPET

PLAIN, PACKED = "model.safetensors", "squeeze.safetensors"
QMAX = 127


# ---------------------------------------------------------------- int8 building blocks
def dynamic_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8 per tensor, activations at run time).

    Raises:
        ValueError: when the model has no ``nn.Linear`` to quantize.
    """
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer: dynamic int8 quantization would change nothing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.to("cpu").eval(), {nn.Linear}, dtype=torch.qint8)


def count_quantized(model: nn.Module) -> dict[str, int]:
    """How many Linear layers are int8, and how many are still float."""
    q = sum(isinstance(m, _qlinear_cls()) for m in model.modules())
    f = sum(type(m) is nn.Linear for m in model.modules())
    e = sum(isinstance(m, Int8Embedding) for m in model.modules())
    return {"quant/int8_linear": q, "quant/float_linear": f, "quant/int8_embedding": e}


def row_scale(w: torch.Tensor) -> torch.Tensor:
    return (w.abs().amax(dim=1, keepdim=True) / QMAX).clamp(min=1e-12)


class Int8Embedding(nn.Module):
    """Weight-only int8 embedding: int8 rows with one fp32 scale per row."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings, 1))

    @classmethod
    def from_float(cls, emb: nn.Embedding) -> "Int8Embedding":
        out = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        w = emb.weight.detach().float().cpu()
        s = row_scale(w)
        out.qweight.copy_(torch.clamp(torch.round(w / s), -QMAX, QMAX).to(torch.int8))
        out.scale.copy_(s)
        return out

    @property
    def weight(self) -> torch.Tensor:  # what code that reads embeddings.weight expects
        return self.qweight.float() * self.scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].float() * self.scale[ids]


def quantize_embeddings(model: nn.Module) -> int:
    """Replace every ``nn.Embedding`` by an ``Int8Embedding`` in place; returns the count."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Embedding:
                setattr(module, name, Int8Embedding.from_float(child))
                count += 1
    return count


def is_int8(model: nn.Module) -> bool:
    """Does the model hold torch.ao int8 layers (which run on CPU only)?"""
    return any(isinstance(m, (_qlinear_cls(), Int8Embedding)) for m in model.modules())


# ---------------------------------------------------------------- tensors in, tensors out
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



def write(model: nn.Module, d: Path, plain_ok: bool = True) -> dict:
    """Write the model's tensors (int8 Linear layers as int8 + scale + zero point, mostly-zero tensors as bitmask +
    values, tied weights once) and its config; returns the format fields. ``plain_ok``: a float model may be a plain
    Hugging Face folder (another codec's layers, which transformers cannot read, pass False)."""
    from squeeze import families

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
    int8_emb = any(isinstance(m, Int8Embedding) for m in model.modules())
    fam = families.family_of_type(getattr(model.config, "model_type", None))
    conv1d_to_linear = bool(fam is not None and fam.conv1d and not families.has_conv1d(model))
    plain = plain_ok and not (qnames or sparse or int8_emb or conv1d_to_linear)
    weights = PLAIN if plain else PACKED
    save_file(tensors, d / weights)
    model.config.save_pretrained(d)
    return {"weights": weights, "conv1d_to_linear": conv1d_to_linear, "int8_linear": qnames,
            "int8_embeddings": int8_emb, "sparse": sparse, "tied": tied}


def read(d: Path, fmt: dict, swap: Optional[Callable[[nn.Module], None]] = None) -> nn.Module:
    """Rebuild the model ``write`` wrote; ``swap`` replaces modules of the skeleton (another codec's layers) before
    the tensors are copied in.

    Raises:
        ValueError: when the tensors do not match the model's.
    """
    from squeeze import quant

    config = transformers.AutoConfig.from_pretrained(d)
    model = getattr(transformers, fmt["auto_class"]).from_config(config)
    if fmt["conv1d_to_linear"]:
        quant.conv1d_to_linear(model)
    if swap is not None:
        swap(model)
    if fmt["int8_embeddings"]:
        quantize_embeddings(model)
    if fmt["int8_linear"]:
        model = dynamic_int8(model)
    tensors = _unpack(load_file(d / fmt["weights"]), fmt["sparse"])
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


def embedding_tensors(model: nn.Module) -> list[str]:
    """Names of the embedding tables' tensors (word, position, token type), fp32 or int8, as ``write`` stores them."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Embedding, Int8Embedding)):
            names += [f"{name}.{k}" for k in dict(m.named_parameters(recurse=False)) | dict(m.named_buffers(recurse=False))]
    return names


def tensors_of(model: nn.Module):
    """Every tensor the model holds once (int8 Linear weights as their int8 values)."""
    seen = set()
    for m in model.modules():
        if isinstance(m, _qlinear_cls()):
            w = m.weight()
            yield w.int_repr()
            if m.bias() is not None:
                yield m.bias()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            yield t


def _nonzero(t: torch.Tensor) -> int:
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):  # no count_nonzero for float8: its bits, sign aside (-0)
        return int(torch.count_nonzero(t.view(torch.uint8) & 0x7F))
    return int(torch.count_nonzero(t))


def size_of(tensors: list[torch.Tensor]) -> dict[str, float]:
    """Parameter count, non-zero count and bytes in memory (int8 weights counted as stored)."""
    counted = [t for t in tensors if t.is_floating_point() or t.dtype == torch.int8]
    return {"size/params": float(sum(t.numel() for t in counted)),
            "size/nonzero": float(sum(_nonzero(t) for t in counted)),
            "size/memory_mb": sum(t.numel() * t.element_size() for t in tensors) / 2**20}


class TorchBacked:
    """What every codec stored on ``write``/``read`` shares: the weight file, sizes and embedding bytes."""

    def weights_file(self, fmt: dict) -> str:
        return fmt.get("weights", PLAIN)

    def size(self, model) -> dict[str, float]:
        return size_of(list(tensors_of(model)))

    def embedding_bytes(self, model, directory: Path) -> int:
        from squeeze import formats

        return formats.stored_bytes(directory, embedding_tensors(model))

    def decoder(self, model, threads=None):
        from squeeze.formats.decoding import TorchDecoder

        return TorchDecoder(model.to("cpu")), self.serving(model)[1] + "; key/value cache"


class TorchCodec(TorchBacked):
    """Dense, sparse (bitmask + values), torch.ao dynamic int8 and int8 embeddings: served by torch itself."""

    name = "torch"
    runtime = "torch (dense, or torch.ao int8 on the CPU)"
    devices = ("cpu", "cuda")

    def save(self, model, directory: Path) -> dict:
        return write(model, directory)

    def load(self, directory: Path, fmt: dict):
        return read(directory, fmt)

    def serving(self, model, example=None):
        if is_int8(model):
            return model, "torch.ao dynamic int8 (fbgemm/qnnpack int8 GEMMs, CPU)"
        if _pruned(model):
            return model, "torch dense kernels: no speed-up from sparsity here (smaller on disk only)"
        return model, "torch"

    def readme(self, fmt: dict) -> str:
        kinds = [k for k, on in (("int8 Linear layers", fmt["int8_linear"]), ("int8 embeddings", fmt["int8_embeddings"]),
                                 ("sparse tensors (bitmask + values)", fmt["sparse"]),
                                 ("GPT-2 Conv1D layers as Linear", fmt["conv1d_to_linear"])) if on]
        how = (f"It is a plain float model: `transformers.{fmt['auto_class']}.from_pretrained(folder)` loads it too."
               if fmt["weights"] == PLAIN else f"It holds {', '.join(kinds) or 'layers transformers cannot read'}: its "
               f"weights are in `{PACKED}`, so `from_pretrained` refuses the folder instead of loading random layers.")
        return f"# A model saved by squeeze\n\n{how}\n\n{LOAD_SNIPPET}"
