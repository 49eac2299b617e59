"""What a task declares, and the padding/batching every task shares.

A task class holds everything squeeze knows about the task, so adding one is one module plus one
registry line: its model head, its metrics with their directions (the first is the primary),
the data formats it reads and its default split, its generated corpus, how a hub dataset maps to
its examples, which token positions PKD distils, how to encode examples and how to score. The
training loop, the config, the data readers and ``analysis`` ask the task; none of them names one.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterator, Literal, Optional

import torch

Mode = Literal["max", "min"]
PkdPositions = Optional[Literal["sequence", "labelled", "reply"]]


class Task:
    """Base of the task classes: the declarations, with defaults where tasks agree."""

    name: ClassVar[str]
    auto_class: ClassVar[str]                      # transformers Auto* class of the model head
    metrics: ClassVar[dict[str, Mode]]             # every reported metric and its direction; the first is primary
    formats: ClassVar[tuple[str, ...]]             # data formats (squeeze.data readers) this task reads
    default_format: ClassVar[Optional[str]] = None  # for a file whose extension says nothing
    default_split: ClassVar[tuple[float, float, float]]  # train/dev/test fractions of a pooled file
    synthetic: ClassVar[Callable[[int, int], list[dict]]]  # generated corpus (n, seed) for tests and demos
    paper_metrics: ClassVar[dict[str, str]] = {}   # Best Way to Squeeze's Table 4 metric -> ours (comparison)
    paper_task: ClassVar[str] = ""                  # the paper's task this one reproduces (analysis.claims reads it)
    pkd_positions: ClassVar[PkdPositions] = None   # where PKD compares hidden states; None: PKD does not apply
    pretraining: ClassVar[bool] = False            # the IMP prune stage's objective, not a downstream task
    lm_scored: ClassVar[bool] = False              # scored by token likelihood: logs tokenizer-free perplexity too
    # the `data` options that only this task's readers use (a trial logs these and the shared ones, no other
    # task's), and whether the `eval` block (generation, ranking) applies to it
    data_options: ClassVar[tuple[str, ...]] = ()
    uses_eval: ClassVar[bool] = False
    encodes_per_example: ClassVar[bool] = True     # encode(a + b) == encode(a) + encode(b): tokenized in chunks
    needs_decoder: ClassVar[bool] = False          # generates left to right: an encoder family (BERT) cannot run it

    @property
    def primary_metric(self) -> str:
        return next(iter(self.metrics))

    @property
    def mode(self) -> Mode:
        return self.metrics[self.primary_metric]

    def head(self, tokenizer) -> str:
        """The Auto* class for this tokenizer (the prune stage's depends on it: MLM or causal LM)."""
        return self.auto_class

    def sniff_format(self, path: str) -> Optional[str]:
        """The format read from a file's content, before its extension is asked (None: no opinion)."""
        return None

    def from_hub(self, ds, data) -> list[dict]:
        """Rows of a Hugging Face ``datasets`` split -> this task's examples."""
        raise NotImplementedError(f"task {self.name!r} has no hub conversion")

    def texts(self, examples: list[dict]) -> Iterator[str]:
        """Running text of the examples (what a tiny preset's tokenizer is trained on)."""
        return (ex["text"] for ex in examples)

    def labels(self, splits: dict[str, list[dict]]) -> Optional[list[str]]:
        return None

    def split_summary(self, examples: list[dict]) -> dict[str, int]:
        """What ``--dry-run`` counts in a split besides its size (labels, entities), so a misread file shows."""
        return {}

    def prepare_tokenizer(self, tokenizer) -> Any:
        """Padding needs a pad token: a decoder's tokenizer without one pads with its end of text (as HF examples do)."""
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def train_transform(self, tokenizer) -> Optional[Callable[[dict, torch.Generator], dict]]:
        """A function applied to every collated training batch (fresh MLM masks); None: batches as encoded."""
        return None

    def encode(self, examples: list[dict], tokenizer, labels, max_length: int) -> list[dict]:
        raise NotImplementedError

    def evaluate(self, model, features: list[dict], examples: list[dict], *, tokenizer, labels, batch_size: int,
                 device, eval_cfg=None, final: bool = False) -> tuple[dict[str, float], list[dict]]:
        raise NotImplementedError

    def predict(self, model, tokenizer, texts: list[str]) -> list:
        """Predictions on raw texts, for a deployed model (``squeeze.pyfunc``)."""
        raise NotImplementedError(f"task {self.name!r} has no text prediction")


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
