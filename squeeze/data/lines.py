"""Texts one per line, one file per label (Rotten Tomatoes ``rt-polarity.pos`` / ``.neg``), for sentiment."""

from __future__ import annotations

from pathlib import Path

from squeeze.data.errors import DataError
from squeeze.data.text import read_text


def label_of(path: str | Path, declared: str | None = None) -> str:
    """The file's label: the one declared, else its extension (``rt-polarity.pos`` -> ``pos``)."""
    label = declared or Path(path).suffix.lstrip(".")
    if not label:
        raise DataError(path, "format 'lines' needs a label per file: give data.labels, or name the file "
                              "<name>.<label> (e.g. rt-polarity.pos)")
    return label


def read_lines(path: str | Path, label: str, encoding: str = "utf-8-sig") -> list[dict]:
    """Non-empty lines as ``{"text", "label"}`` examples, all with ``label``."""
    return [{"text": row["text"], "label": label} for row in read_text(path, encoding)]
