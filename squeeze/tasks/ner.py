"""NER: token classification (CoNLL-2003 in the paper); the label sits on the first sub-word."""

from __future__ import annotations

import torch

from squeeze import metrics
from squeeze.data import synthetic
from squeeze.data.conll import iob1_to_iob2, is_iob2
from squeeze.data.errors import DataError
from squeeze.tasks.base import Task, batches, collate, to_device


class NerTask(Task):
    data_options = ('token_column', 'tag_column', 'comment_prefix', 'scheme')
    name = "ner"
    auto_class = "AutoModelForTokenClassification"
    metrics = {"f1": "max", "precision": "max", "recall": "max", "token_accuracy": "max"}
    formats = ("conll",)
    default_format = "conll"
    default_split = (0.7, 0.15, 0.15)
    synthetic = staticmethod(synthetic.ner)
    # the paper's Table 4 column -> ours; the first ranks the techniques in the comparison
    paper_metrics = {"f1": "f1", "accuracy": "token_accuracy", "precision": "precision", "recall": "recall"}
    paper_task = "named entity recognition"
    pkd_positions = "labelled"

    def from_hub(self, ds, data):
        names = ds.features["ner_tags"].feature.names
        rows = [{"tokens": r["tokens"], "tags": [names[t] for t in r["ner_tags"]]} for r in ds if r["tokens"]]
        if data.scheme == "iob1" or (data.scheme == "auto" and not all(is_iob2(r["tags"]) for r in rows)):
            for r in rows:
                r["tags"] = iob1_to_iob2(r["tags"])
        return rows

    def texts(self, examples):
        return (" ".join(ex["tokens"]) for ex in examples)

    def split_summary(self, examples):
        from collections import Counter

        return dict(sorted(Counter(t[2:] for ex in examples for t in ex["tags"] if t.startswith("B-")).items()))

    def labels(self, splits):
        names = sorted({t for ex in splits["train"] for t in ex["tags"]}, key=lambda t: (t != "O", t[2:], t))
        every = {t for part in splits.values() for ex in part for t in ex["tags"]}
        types: dict[str, str] = {}
        for t in sorted(every):
            kind = t[2:] if t[:2] in ("B-", "I-", "E-", "S-") else t
            if kind.lower() in types and types[kind.lower()] != kind:
                raise DataError("train", f"entity types {types[kind.lower()]!r} and {kind!r} differ only by case: they "
                                         "would be two types; write them alike")
            types.setdefault(kind.lower(), kind)
        for split in ("dev", "test"):
            extra = sorted({t for ex in splits[split] for t in ex["tags"]} - set(names))
            if extra:  # a class the model never trains on: its entities count as missed, as they should
                import logging

                logging.getLogger(__name__).warning("tags %s occur in the %s split but not in train: the model cannot "
                                                    "predict them, their entities count as missed", extra, split)
                names += [t for t in extra if t not in names]
        if all(t == "O" for t in names):
            raise DataError("train", "no entity tag: every tag is O (is data.tag_column the tag column?)")
        return names

    def encode(self, examples, tokenizer, labels, max_length):
        index = {l: i for i, l in enumerate(labels)}
        enc = tokenizer([ex["tokens"] for ex in examples], is_split_into_words=True, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        out = []
        for i, ex in enumerate(examples):
            word_ids, seen, tags = enc.word_ids(i), set(), []
            for w in word_ids:
                first = w is not None and w not in seen
                tags.append(index[ex["tags"][w]] if first else -100)
                if w is not None:
                    seen.add(w)
            out.append(dict({k: enc[k][i] for k in keys}, labels=tags, words=[w if w is not None else -1 for w in word_ids]))
        return out

    @torch.no_grad()
    def predict(self, model, tokenizer, texts):
        """One tag per white-space word of each text (the label of its first sub-word)."""
        model.eval()
        words = [t.split() for t in texts]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=512, padding=True, return_tensors="pt")
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        pred = model(**{k: enc[k] for k in keys}).logits.argmax(-1).tolist()
        out = []
        for i, ws in enumerate(words):
            tags, seen = ["O"] * len(ws), set()
            for pos, w in enumerate(enc.word_ids(i)):
                if w is not None and w not in seen:
                    tags[w] = model.config.id2label[pred[i][pos]]
                    seen.add(w)
            out.append(tags)
        return out

    @torch.no_grad()
    def evaluate(self, model, features, examples, *, tokenizer, labels, batch_size, device, eval_cfg=None, final=False):
        model.eval()
        preds = [["O"] * len(ex["tokens"]) for ex in examples]  # words cut off by max_length count as O
        for chunk in batches(features, batch_size):
            logits = model(**to_device(collate(chunk, tokenizer.pad_token_id), device)).logits
            for f, row in zip(chunk, logits.argmax(-1).tolist()):
                for pos, (lab, word) in enumerate(zip(f["labels"], f["words"])):
                    if lab != -100:
                        preds[f["_index"]][word] = labels[row[pos]]
        gold = [ex["tags"] for ex in examples]
        scores = metrics.entities(gold, preds)
        if final:  # tagging every token O finds no entity
            scores.update(chance_f1=0.0, n=float(len(gold)))
        rows = [{"tokens": " ".join(ex["tokens"]), "tags": " ".join(g), "prediction": " ".join(p)}
                for ex, g, p in zip(examples, gold, preds)]
        return scores, rows
