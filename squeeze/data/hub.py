"""Datasets from the Hugging Face hub (users have it; tests never reach it).

Each task converts a split's rows to its examples (``Task.from_hub``): ``imdb`` (text/label),
``eriktks/conll2003`` (tokens/ner_tags as a ClassLabel), Persona-Chat as
``personality``/``history``/``candidates`` (the reply is the last candidate), ``wikitext`` (text).
"""

from __future__ import annotations

from squeeze.data.errors import DataError

SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "test": "test"}


def load_hub(task, data) -> dict[str, list[dict]]:
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
            out[name] = task.from_hub(ds, data)
    return out
