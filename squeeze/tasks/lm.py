"""Language modelling on plain text (WikiText): the IMP prune stage's objective.

The model's own pre-training objective: masked LM (15% of tokens, 80/10/10) for BERT-family
tokenizers (they have a mask token), causal LM for GPT-2. Text is concatenated and cut into
blocks of ``max_length``. Evaluation masks are drawn once, seeded, so evaluation is repeatable;
training masks are drawn afresh for every batch (``train_transform``, as BERT's dynamic masking
and HF's ``DataCollatorForLanguageModeling``), from a generator seeded per epoch, so a resumed
trial draws the same ones.
"""

from __future__ import annotations

import functools
import math
import random

import torch

from squeeze.data import synthetic
from squeeze.tasks.base import Task, batches, collate, to_device

MLM_PROB = 0.15


class LmTask(Task):
    data_options = ('text_column',)
    encodes_per_example = False  # one token stream cut into blocks: tokenized whole
    name = "lm"
    auto_class = "AutoModelForMaskedLM"
    metrics = {"ppl": "min", "word_ppl": "min"}
    formats = ("text",)
    default_format = "text"
    default_split = (0.8, 0.1, 0.1)
    synthetic = staticmethod(synthetic.text)
    pretraining = True
    lm_scored = True

    def head(self, tokenizer) -> str:
        return "AutoModelForMaskedLM" if tokenizer.mask_token_id is not None else "AutoModelForCausalLM"

    def from_hub(self, ds, data):
        return [{"text": r["text"].strip()} for r in ds if r["text"].strip()]

    def prepare_tokenizer(self, tokenizer):
        if tokenizer.pad_token is None:
            tokenizer.add_special_tokens({"pad_token": tokenizer.eos_token or "<pad>"})
        return tokenizer

    def _mask(self, ids: list[int], tokenizer, rng: random.Random) -> tuple[list[int], list[int]]:
        special = set(tokenizer.all_special_ids)
        inputs, labels = list(ids), [-100] * len(ids)
        for i, t in enumerate(ids):
            if t in special or rng.random() >= MLM_PROB:
                continue
            labels[i] = t
            r = rng.random()
            inputs[i] = tokenizer.mask_token_id if r < 0.8 else (rng.randrange(len(tokenizer)) if r < 0.9 else t)
        return inputs, labels

    def train_transform(self, tokenizer):
        """Fresh MLM masks for each training batch (None for causal LM, which needs none)."""
        if tokenizer.mask_token_id is None:
            return None
        return functools.partial(remask, mask_id=tokenizer.mask_token_id, vocab=len(tokenizer),
                                 special=sorted(set(tokenizer.all_special_ids)))

    def encode(self, examples, tokenizer, labels, max_length):
        mlm = tokenizer.mask_token_id is not None
        sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None and not mlm else []
        ids = tokenizer([ex["text"] for ex in examples], add_special_tokens=False)["input_ids"]
        stream = [t for row in ids for t in row + sep]  # tokenized once, in one batched call
        body = max_length - 2 if mlm else max_length
        rng = random.Random(len(stream))
        out = []
        for i in range(0, max(len(stream) - 1, 1), body):
            block = stream[i:i + body]
            if mlm:
                block = [tokenizer.cls_token_id] + block + [tokenizer.sep_token_id]
                ids, labs = self._mask(block, tokenizer, rng)
            else:
                ids, labs = block, list(block)
            if len(block) > 2:
                out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labs,
                            "n_words": 0 if mlm else len(tokenizer.decode(block[1:]).split())})
        return out

    @torch.no_grad()
    def evaluate(self, model, features, examples, *, tokenizer, labels, batch_size, device, eval_cfg=None, final=False):
        model.eval()
        nll, n = 0.0, 0
        causal = tokenizer.mask_token_id is None
        for chunk in batches(features, batch_size):
            b = to_device(collate(chunk, tokenizer.pad_token_id), device)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
            labs = b["labels"]
            if causal:
                logits, labs = logits[:, :-1], labs[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labs, ignore_index=-100, reduction="sum")
            nll += float(loss)
            n += int((labs != -100).sum())
        ppl = math.exp(nll / n) if n else float("nan")
        scores = {"ppl": ppl, "nll": nll / max(n, 1)}
        words = sum(f.get("n_words", 0) for f in features)
        if causal and words:  # per word: comparable across tokenizers (an MLM scores only masked tokens: no such figure)
            scores["word_ppl"] = math.exp(nll / words)
        return scores, []


def remask(batch: dict, generator: torch.Generator, *, mask_id: int, vocab: int, special: list[int]) -> dict:
    """Draw new MLM masks for a collated batch: 15% of the non-special tokens, 80% [MASK] / 10% random / 10% kept."""
    labels = batch["labels"]
    ids = torch.where(labels != -100, labels, batch["input_ids"])  # the original tokens
    candidates = ~torch.isin(ids, torch.tensor(special)) & (batch["attention_mask"] == 1)
    chosen = (torch.rand(ids.shape, generator=generator) < MLM_PROB) & candidates
    if not chosen.any() and candidates.any():  # a short batch left with no masked token would have a NaN loss
        where = candidates.flatten().nonzero().flatten()
        chosen.view(-1)[where[torch.randint(len(where), (1,), generator=generator)]] = True
    r = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(vocab, ids.shape, generator=generator)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_ids, inputs)
    return {**batch, "input_ids": inputs, "labels": torch.where(chosen, ids, torch.full_like(ids, -100))}
