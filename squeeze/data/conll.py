"""CoNLL column files (``-DOCSTART-`` lines, a blank line between sentences), IOB1 or IOB2."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from squeeze.data.errors import DataError


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """Convert IOB1 (``I-`` starts an entity unless it continues one of the same type) to IOB2."""
    out = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def is_iob2(tags: list[str]) -> bool:
    """True when every entity starts with ``B-`` (an ``I-`` never follows O or another type)."""
    return iob1_to_iob2(tags) == tags


def _check_tag(path: Path, line: int, tag: str) -> None:
    if tag != "O" and not (len(tag) > 2 and tag[:2] in ("B-", "I-")):
        raise DataError(path, f"tag {tag!r} is not O, B-TYPE or I-TYPE", line)


def read_conll(path: str | Path, tag_column: int = -1, scheme: Literal["auto", "iob1", "iob2"] = "auto") -> list[dict]:
    """Read sentences as ``{"tokens", "tags"}`` with tags in IOB2.

    Args:
        path: the file; columns separated by spaces or tabs, token first.
        tag_column: index of the tag column (default: last).
        scheme: ``iob1`` or ``iob2`` as declared, or ``auto``: IOB1 if any sentence is not valid IOB2.
    """
    path = Path(path)
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    width = None
    with path.open(encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("-DOCSTART-"):
                if tokens:
                    sentences.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
                continue
            cols = line.split()
            if len(cols) < 2:
                raise DataError(path, f"expected a token and a tag column, got {len(cols)} column(s)", n)
            if width is not None and len(cols) != width:
                raise DataError(path, f"expected {width} columns like the lines before, got {len(cols)}", n)
            width = len(cols)
            try:
                tag = cols[tag_column]
            except IndexError:
                raise DataError(path, f"tag_column {tag_column} is out of range for {len(cols)} columns", n) from None
            _check_tag(path, n, tag)
            tokens.append(cols[0])
            tags.append(tag)
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    if not sentences:
        raise DataError(path, "no sentences")
    if scheme == "iob1" or (scheme == "auto" and not all(is_iob2(s["tags"]) for s in sentences)):
        for s in sentences:
            s["tags"] = iob1_to_iob2(s["tags"])
    return sentences
