"""What a task declares, and the padding/batching every task shares.

A task is data plus a few functions: its model head (``auto_class``), how to encode examples,
how to score predictions, its ``primary_metric`` and ``mode``. The training loop never asks
which task it runs.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import torch


class Task(Protocol):
    name: str
    auto_class: str           # transformers Auto* class of the model head
    tokenizer_kind: str       # "bert" or "gpt2": which tiny tokenizer the presets train
    primary_metric: str       # without the val/ or test/ prefix
    mode: str                 # "max" or "min"

    def texts(self, examples: list[dict]) -> Iterator[str]: ...
    def labels(self, splits: dict[str, list[dict]]) -> list[str] | None: ...
    def prepare_tokenizer(self, tokenizer) -> Any: ...
    def encode(self, examples: list[dict], tokenizer, labels: list[str] | None, max_length: int) -> list[dict]: ...
    def evaluate(self, model, features: list[dict], examples: list[dict], *, tokenizer, labels, batch_size: int,
                 device, eval_cfg=None, final: bool = False) -> tuple[dict[str, float], list[dict]]: ...


PAD_VALUES = {"labels": -100, "attention_mask": 0, "token_type_ids": 0}
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def collate(features: list[dict], pad_id: int, keys=MODEL_KEYS) -> dict[str, torch.Tensor]:
    """Pad the model inputs of a batch to its longest sequence (dynamic padding, right side)."""
    longest = max(len(f["input_ids"]) for f in features)
    batch = {}
    for key in keys:
        if key not in features[0]:
            continue
        if isinstance(features[0][key], int):
            batch[key] = torch.tensor([f[key] for f in features])
            continue
        pad = pad_id if key == "input_ids" else PAD_VALUES.get(key, 0)
        batch[key] = torch.tensor([list(f[key]) + [pad] * (longest - len(f[key])) for f in features])
    return batch


def batches(features: list[dict], batch_size: int) -> Iterator[list[dict]]:
    """Evaluation batches in order, longest-first within the data to reduce padding."""
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    for i in range(0, len(order), batch_size):
        yield [dict(features[j], _index=j) for j in order[i:i + batch_size]]


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
