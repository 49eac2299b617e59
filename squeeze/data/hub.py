"""Datasets from the Hugging Face hub (users have it; tests never reach it).

Known shapes: ``imdb`` (text/label), ``eriktks/conll2003`` (tokens/ner_tags as a ClassLabel),
Persona-Chat as ``personality``/``history``/``candidates`` (the reply is the last candidate),
``wikitext`` (text).
"""

from __future__ import annotations

from squeeze.data.conll import is_iob2, iob1_to_iob2
from squeeze.data.errors import DataError

SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "test": "test"}


def _convert(task: str, ds, data) -> list[dict]:
    cols = set(ds.column_names)
    if task == "sentiment":
        feat = ds.features.get(data.label_column)
        names = getattr(feat, "names", None)
        return [{"text": r[data.text_column], "label": names[r[data.label_column]] if names else str(r[data.label_column])}
                for r in ds if r[data.label_column] is not None and r[data.label_column] >= 0]
    if task == "ner":
        names = ds.features["ner_tags"].feature.names
        rows = [{"tokens": r["tokens"], "tags": [names[t] for t in r["ner_tags"]]} for r in ds if r["tokens"]]
        if data.scheme == "iob1" or (data.scheme == "auto" and not all(is_iob2(r["tags"]) for r in rows)):
            for r in rows:
                r["tags"] = iob1_to_iob2(r["tags"])
        return rows
    if task == "dialogue":
        if not {"personality", "history", "candidates"} <= cols:
            raise DataError(data.name, f"expected columns personality, history, candidates; got {sorted(cols)}")
        return [{"persona": r["personality"], "history": r["history"], "reply": r["candidates"][-1],
                 "candidates": r["candidates"], "dialog": r.get("conv_id", i)} for i, r in enumerate(ds)]
    return [{"text": r["text"].strip()} for r in ds if r["text"].strip()]


def load_hub(task: str, data) -> dict[str, list[dict]]:
    """Load every split of ``data.name`` and convert it to the task's shape."""
    import datasets

    try:
        dsd = datasets.load_dataset(data.name, data.subset)
    except Exception as exc:  # offline, unknown id, gated dataset: the user needs the message
        raise DataError(data.name, f"could not load from the Hugging Face hub: {exc}") from None
    out: dict[str, list[dict]] = {}
    for split, ds in dsd.items():
        name = SPLIT_NAMES.get(split)
        if name is not None:
            out[name] = _convert(task, ds, data)
    return out
