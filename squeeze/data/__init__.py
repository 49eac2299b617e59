"""Load a task's examples from the hub, local files or a generated corpus, and split them.

``load_splits(task, data)`` returns ``{"train": [...], "dev": [...], "test": [...]}`` of plain
dicts in the task's shape (see the readers), plus a name for the source. The task object says
which formats it reads, its default split and its generated corpus; this package knows formats.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from squeeze.data import dailydialog
from squeeze.data.chat import read_chat, read_turns
from squeeze.data.conll import read_conll
from squeeze.data.errors import DataError
from squeeze.data.lines import label_of, read_lines
from squeeze.data.parlai import read_parlai
from squeeze.data.tabular import read_labelled
from squeeze.data.text import read_text

SPLITS = ("train", "dev", "test")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".txt": "text",
              ".tokens": "text", ".conll": "conll", ".testa": "conll", ".testb": "conll", ".train": "conll"}
TABLES = ("csv", "tsv", "json", "jsonl", "parquet")


@dataclass
class DataBundle:
    name: str
    splits: dict[str, list[dict]]
    sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.sizes = {k: len(v) for k, v in self.splits.items()}


def format_of(task, path: str, declared: str | None) -> str:
    """The format of one file for ``task``: declared, else sniffed by the task, else by extension or the task's default.

    Raises:
        DataError: when it cannot be told or the task cannot read it.
    """
    fmt = declared or task.sniff_format(path) or EXTENSIONS.get(Path(path).suffix.lower()) or task.default_format
    allowed = task.formats
    if fmt is None:
        raise DataError(path, f"cannot tell the format from the extension {Path(path).suffix!r}; set data.format "
                              f"(allowed for {task.name}: {', '.join(allowed)})")
    if fmt not in allowed:
        raise DataError(path, f"format {fmt!r} cannot feed task {task.name!r}; allowed: {', '.join(allowed)} (set data.format)")
    return fmt


def read_file(task, path: str, data, label: str | None = None) -> list[dict]:
    """Read one local file in the format declared or inferred from its extension (or, for dialogue, its text).

    Raises:
        DataError: naming the file, the line where known and the option to change (a file in another text
            encoding: the encoding it looks like, and ``data.encoding``).
    """
    path = os.path.expandvars(path)
    if not Path(path).is_file():
        raise DataError(path, "no such data file")
    fmt = format_of(task, path, data.format)
    try:
        return _read(fmt, path, data, label)
    except UnicodeDecodeError as exc:
        raise _encoding_error(path, data, exc) from None


def _read(fmt: str, path: str, data, label: str | None) -> list[dict]:
    enc = data.encoding or "utf-8-sig"
    if fmt in TABLES:
        return read_labelled(path, data)
    if fmt == "conll":
        return read_conll(path, data.tag_column, data.scheme, data.token_column, data.comment_prefix, data.delimiter, enc)
    if fmt == "chat":
        return read_chat(path, data)
    if fmt == "turns":
        return read_turns(path, data)
    if fmt == "lines":
        return read_lines(path, label_of(path, label), enc)
    if fmt == "parlai":
        examples = read_parlai(path, enc)
        if data.distractors and not any(ex["candidates"] for ex in examples):  # ParlAI text without candidates
            dailydialog.add_candidates(examples, data.distractors, data.seed)
        return examples
    if fmt == "dailydialog":
        return dailydialog.read_dailydialog(path, data.distractors, data.seed, enc)
    return read_text(path, enc)


def _encoding_error(path: str, data, exc: UnicodeDecodeError) -> DataError:
    try:
        from charset_normalizer import from_path

        best = from_path(path).best()
        guess = best.encoding if best is not None else None
    except Exception:  # the guess is a courtesy; the error stands without it
        guess = None
    found = f": it looks like {guess}" if guess else ""
    return DataError(path, f"not {data.encoding or 'UTF-8'} text ({exc.reason} at byte {exc.start}){found}; set "
                           f"data.encoding{f' to {guess}' if guess else ''} or re-encode the file")


def _names(paths: list[str]) -> str:
    """A data set's name: its files' names (never the absolute paths of the machine that ran it)."""
    import os

    return ",".join(dict.fromkeys(os.path.basename(str(p)) for p in paths))


LABEL_FIELDS = ("label", "tags", "labels")


def _input_key(ex: dict) -> str:
    return json.dumps({k: v for k, v in ex.items() if k not in LABEL_FIELDS}, sort_keys=True, default=str)


def _distinct(splits: dict[str, list[dict]]) -> str:
    """How many examples, and how many distinct inputs, the splits hold (copies of an input stay in one split)."""
    examples = [ex for part in splits.values() for ex in part]
    if not examples or "dialog" in examples[0]:
        return ""
    distinct = len({_input_key(ex) for ex in examples})
    if distinct == len(examples):
        return f" ({len(examples)} examples in all)"
    return (f" ({len(examples)} examples in all, {distinct} distinct: copies of one input are kept in one split, "
            "so that no test input is also trained on)")


def split_pool(pool: list[dict], fractions, seed: int, exact: bool = False) -> dict[str, list[dict]]:
    """Shuffle deterministically and cut into train/dev/test; dialogue turns stay with their dialogue, and copies of
    one input stay together (``exact``: no test split is kept back, for a dev split carved from a train file).

    Copies: CoNLL-2003's three files pooled hold the same sentence many times (score-table rows, datelines); split
    one by one, 6.5% of test sentences were verbatim in train. Examples with the same input (every field but the
    label) are one group, placed where the first of them would have gone; a pool without copies splits as before.
    """
    groups: dict = {}
    first: dict[str, int] = {}
    for i, ex in enumerate(pool):
        key = ex["dialog"] if "dialog" in ex else first.setdefault(_input_key(ex), i)
        groups.setdefault(key, []).append(ex)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n = len(keys)
    n_train = round(fractions[0] * n)
    n_dev = max(1, round(fractions[1] * n)) if n >= 3 else 0
    n_train = n - n_dev if exact else min(n_train, n - n_dev - 1)
    cuts = {"train": keys[:n_train], "dev": keys[n_train:n_train + n_dev], "test": keys[n_train + n_dev:]}
    return {name: [ex for k in ks for ex in groups[k]] for name, ks in cuts.items()}


def limit_split(examples: list[dict], n: int, seed: int) -> list[dict]:
    """The first ``n`` examples of a shuffled split; dialogue turns, which come grouped by dialogue, as a seeded sample
    of ``n`` turns across the split (in file order). The first 60 turns of a dialogue split were 4 dialogues: a dev
    set of 4 conversations made the repro's dev perplexity 1.9x its test perplexity for every technique."""
    if not n or len(examples) <= n:
        return examples
    if "dialog" not in examples[0]:
        return examples[:n]
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def _hub(task, data) -> dict[str, list[dict]]:
    from squeeze.data.hub import load_hub

    return load_hub(task, data)


def load_splits(task, data) -> DataBundle:
    """Load and split the examples for ``task`` (a task object or registry name) according to a ``DataCfg``.

    Raises:
        DataError: naming the file (and line) that cannot be used.
    """
    if isinstance(task, str):
        from squeeze.registry import get_task

        task = get_task(task)
    if data.source == "synthetic":
        pool = task.synthetic(data.size, data.seed)
        bundle = DataBundle(f"synthetic-{task.name}", split_pool(pool, data.split, data.seed))
    elif data.source == "files" and data.files:
        labels = data.labels or [None] * len(data.files)
        pool = [ex for p, label in zip(data.files, labels) for ex in read_file(task, p, data, label)]
        bundle = DataBundle(_names(data.files), split_pool(pool, data.split, data.seed))
    elif data.source == "files" and isinstance(data.dev, float):
        train = read_file(task, data.train, data)
        rest = split_pool(train, (1 - data.dev, data.dev, 0.0), data.seed, exact=True)
        bundle = DataBundle(_names([data.train, data.test]), {"train": rest["train"], "dev": rest["dev"],
                                                              "test": read_file(task, data.test, data)})
    elif data.source == "files":
        bundle = DataBundle(_names([data.train, data.dev, data.test]),
                            {s: read_file(task, getattr(data, s), data) for s in SPLITS})
    else:
        splits = _hub(task, data)
        if "dev" not in splits or "test" not in splits:
            pool = [ex for part in splits.values() for ex in part]
            splits = split_pool(pool, data.split, data.seed)
        bundle = DataBundle(data.name, splits)
    limits = {"train": data.limit_train, "dev": data.limit_eval, "test": data.limit_eval}
    for s, limit in limits.items():
        bundle.splits[s] = limit_split(bundle.splits[s], limit, data.seed)
    for s in SPLITS:
        if not bundle.splits.get(s):
            raise DataError(bundle.name, f"split {s!r} is empty{_distinct(bundle.splits)}; use more data or other "
                                         "split fractions")
    bundle.__post_init__()
    return bundle
