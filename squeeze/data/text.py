"""Plain text for language modelling (WikiText style: one paragraph per line)."""

from __future__ import annotations

from pathlib import Path

from squeeze.data.errors import DataError


def read_text(path: str | Path) -> list[dict]:
    """Non-empty lines as ``{"text"}`` examples; WikiText headings (`` = T = ``) are kept."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text: {exc.reason} at byte {exc.start} (re-encode it, e.g. from cp1252)") from None
    rows = [{"text": line.strip()} for line in lines if line.strip()]
    if not rows:
        raise DataError(path, "no text")
    return rows
