"""Sentiment: sequence classification (IMDB in the paper), BERT by default."""

from __future__ import annotations

import torch

from squeeze import metrics
from squeeze.data import synthetic
from squeeze.data.errors import DataError
from squeeze.tasks.base import Task, batches, collate, to_device

POSITIVE_NAMES = ("pos", "positive", "1", "true", "yes")


class SentimentTask(Task):
    data_options = ('text_column', 'label_column', 'label_map', 'labels')
    name = "sentiment"
    auto_class = "AutoModelForSequenceClassification"
    metrics = {"accuracy": "max", "precision": "max", "recall": "max", "f1": "max"}
    formats = ("csv", "tsv", "json", "jsonl", "parquet", "lines")
    default_split = (0.5, 0.25, 0.25)          # the paper's split of IMDB
    synthetic = staticmethod(synthetic.sentiment)
    # the paper's Table 4 column -> ours; the first ranks the techniques in the comparison
    paper_metrics = {"accuracy": "accuracy", "f1": "f1", "precision": "precision", "recall": "recall"}
    paper_task = "sentiment analysis"
    pkd_positions = "sequence"

    def from_hub(self, ds, data):
        names = getattr(ds.features.get(data.label_column), "names", None)
        return [{"text": r[data.text_column], "label": names[r[data.label_column]] if names else str(r[data.label_column])}
                for r in ds if r[data.label_column] is not None and r[data.label_column] >= 0]

    def split_summary(self, examples):
        from collections import Counter

        return dict(sorted(Counter(ex["label"] for ex in examples).items()))

    def labels(self, splits):
        names = sorted({ex["label"] for ex in splits["train"]})
        for split in ("dev", "test"):
            extra = sorted({ex["label"] for ex in splits[split]} - set(names))
            if extra:
                raise DataError(split, f"labels {extra} do not occur in the train split (train labels: {names})")
        if len(names) < 2:
            raise DataError("train", f"need at least two labels, found {names}")
        folded = {}
        for n in names:
            folded.setdefault(n.strip().lower(), []).append(n)
        clash = [v for v in folded.values() if len(v) > 1]
        if clash:
            raise DataError("train", f"labels {clash[0]} differ only by case or spaces: they would be separate classes; "
                                     "make them consistent in the data or map them with data.label_map")
        return names

    def encode(self, examples, tokenizer, labels, max_length):
        index = {l: i for i, l in enumerate(labels)}
        enc = tokenizer([ex["text"] for ex in examples], truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return [dict({k: enc[k][i] for k in keys}, labels=index[ex["label"]]) for i, ex in enumerate(examples)]

    def positive_index(self, labels):
        hits = [i for i, l in enumerate(labels) if l.lower() in POSITIVE_NAMES]
        return hits[0] if hits else len(labels) - 1

    @torch.no_grad()
    def predict(self, model, tokenizer, texts):
        """The label of each text."""
        model.eval()
        enc = tokenizer(texts, truncation=True, max_length=512, padding=True, return_tensors="pt")
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        ids = model(**{k: enc[k] for k in keys}).logits.argmax(-1).tolist()
        return [model.config.id2label[i] for i in ids]

    @torch.no_grad()
    def evaluate(self, model, features, examples, *, tokenizer, labels, batch_size, device, eval_cfg=None, final=False):
        model.eval()
        preds = [0] * len(features)
        for chunk in batches(features, batch_size):
            logits = model(**to_device(collate(chunk, tokenizer.pad_token_id), device)).logits
            for f, p in zip(chunk, logits.argmax(-1).tolist()):
                preds[f["_index"]] = p
        gold = [f["labels"] for f in features]
        scores = metrics.classification(gold, preds, positive=self.positive_index(labels))
        if final:  # what always answering the most frequent class scores: a baseline must beat it to mean anything
            scores.update(chance_accuracy=max(gold.count(c) for c in set(gold)) / len(gold), n=float(len(gold)))
        rows = [{"text": ex["text"], "label": ex["label"], "prediction": labels[p]} for ex, p in zip(examples, preds)]
        return scores, rows
