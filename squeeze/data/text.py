"""Plain text for language modelling (WikiText style: one paragraph per line)."""

from __future__ import annotations

from pathlib import Path

from squeeze.data.errors import DataError


def read_text(path: str | Path, encoding: str = "utf-8-sig") -> list[dict]:
    """Non-empty lines as ``{"text"}`` examples; WikiText headings (`` = T = ``) are kept."""
    path = Path(path)
    lines = path.read_text(encoding=encoding).splitlines()  # a decoding error is named by squeeze.data.read_file
    rows = [{"text": line.strip()} for line in lines if line.strip()]
    if not rows:
        raise DataError(path, "no text")
    return rows
