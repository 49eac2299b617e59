"""CSV and JSONL files with a text column and a label column (sentiment)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from squeeze.data.errors import DataError


def _row(path: Path, line: int, rec: dict, text_column: str, label_column: str) -> dict:
    for col in (text_column, label_column):
        if col not in rec:
            raise DataError(path, f"missing column {col!r} (columns: {sorted(rec)})", line)
    text, label = rec[text_column], rec[label_column]
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, f"empty or non-text value in column {text_column!r}", line)
    if label is None or str(label).strip() == "":
        raise DataError(path, f"empty label in column {label_column!r}", line)
    return {"text": text, "label": str(label).strip()}


def read_csv(path: str | Path, text_column: str = "text", label_column: str = "label") -> list[dict]:
    """Read a CSV with a header row; returns ``{"text", "label"}`` dicts (labels as strings)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, strict=True)
        if reader.fieldnames is None:
            raise DataError(path, "empty CSV file (a header row with the column names is required)")
        rows = []
        try:
            for rec in reader:
                if None in rec or any(v is None for v in rec.values()):
                    raise DataError(path, f"expected {len(reader.fieldnames)} fields", reader.line_num)
                rows.append(_row(path, reader.line_num, rec, text_column, label_column))
        except csv.Error as exc:
            raise DataError(path, f"malformed CSV: {exc}", reader.line_num) from None
    if not rows:
        raise DataError(path, "no rows")
    return rows


def read_jsonl(path: str | Path, text_column: str = "text", label_column: str = "label") -> list[dict]:
    """Read JSON Lines, one object per line; blank lines are skipped."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, f"malformed JSON: {exc.msg}", n) from None
            if not isinstance(rec, dict):
                raise DataError(path, "each line must be a JSON object", n)
            rows.append(_row(path, n, rec, text_column, label_column))
    if not rows:
        raise DataError(path, "no rows")
    return rows
