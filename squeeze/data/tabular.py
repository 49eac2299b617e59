"""Tables of examples (CSV, TSV, JSON, JSON Lines, Parquet) read with Hugging Face ``datasets``.

``read_table`` returns every row as a dict of strings; ``read_labelled`` picks a text and a label column
(sentiment). What real files do is handled: a UTF-8 byte-order mark, CRLF line ends, quoted fields holding
commas or newlines (CSV), a TSV whose text holds unbalanced quotes (read with quoting off), a file without a
header row (``header: false`` with ``columns: [...]``), values such as ``NA`` kept as text, numbers kept as
written (``007`` stays ``007``). A file that cannot be read in the declared layout is refused, naming the
file, the line where known and the option to change.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from squeeze.data.errors import DataError

KINDS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}


def table_kind(path: str | Path, declared: str | None = None) -> str:
    """csv, tsv, json, jsonl or parquet: the declared tabular format, else the file's extension (else csv)."""
    if declared in ("csv", "tsv", "json", "jsonl", "parquet"):
        return declared
    return KINDS.get(Path(path).suffix.lower(), "csv")


def _load(path: Path, kind: str, data):
    import datasets

    datasets.disable_progress_bars()
    # a file that does not parse is reported once, as a DataError naming the line; not also as datasets' ERROR log
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
    if kind in ("csv", "tsv"):
        delimiter = data.delimiter or ("\t" if kind == "tsv" else ",")
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSV text holds stray quotes: he said "hi
        kw = dict(delimiter=delimiter, quoting=quoting, encoding=data.encoding or "utf-8-sig", na_filter=False)
        if data.header:
            with path.open(encoding=data.encoding or "utf-8-sig", newline="") as fh:
                names = next(csv.reader(fh, delimiter=delimiter, quoting=quoting), [])
        else:
            names = list(data.columns)
            kw.update(header=None, names=names)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # one of the two columns would silently stand for both
            raise DataError(path, f"column {twice[0]!r} appears twice in the {'header' if data.header else 'columns'}; "
                                  "rename one", 1 if data.header else None)
        # every column as text: labels such as 007 or NA stay as written
        kw["features"] = datasets.Features({n: datasets.Value("string") for n in names})
        return datasets.load_dataset("csv", data_files=str(path), split="train", **kw)
    return datasets.load_dataset("parquet" if kind == "parquet" else "json", data_files=str(path), split="train")


def _why(exc: BaseException) -> tuple[str, int | None]:
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause) or type(cause).__name__
    m = re.search(r"line (\d+)", text)
    return text.splitlines()[0][:300], int(m.group(1)) if m else None


def _first_bad_json_line(path: Path) -> tuple[str | None, int | None]:
    import json

    with path.open(encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"malformed JSON: {exc.msg}", n
                if not isinstance(rec, dict):
                    return "each line must be a JSON object", n
    return None, None


def read_table(path: str | Path, data, kind: str | None = None) -> list[dict]:
    """Every row of a table as a dict of column -> value (text as written).

    Raises:
        DataError: naming the file, the line where known and the option to change.
    """
    path = Path(path)
    kind = kind or table_kind(path, data.format)
    try:
        ds = _load(path, kind, data)
    except DataError:
        raise
    except Exception as exc:  # pandas/arrow parse errors arrive wrapped in DatasetGenerationError
        cause = exc
        while cause is not None and not isinstance(cause, UnicodeDecodeError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None  # named with the encoding it looks like by squeeze.data.read_file
        why, line = _first_bad_json_line(path) if kind == "jsonl" else (None, None)
        if why is None:
            why, line = _why(exc)
        hint = {"csv": "set data.format (tsv, json, jsonl, parquet), data.delimiter, or data.header: false with data.columns",
                "tsv": "set data.format or data.delimiter", "json": "each line must be one JSON object (format jsonl) or the "
                "file one JSON array (format json)"}.get(kind.rstrip("l"), "set data.format")
        raise DataError(path, f"cannot be read as {kind} ({why}); {hint}", line) from None
    rows = ds.to_list()
    if not rows:
        raise DataError(path, "no rows")
    return rows


def row_line(data, i: int, path: str | Path = "") -> int | None:
    """The line of row i in a plain CSV/TSV (a header takes line 1) or JSON Lines file; None for JSON arrays and
    Parquet. Approximate when CSV fields hold newlines."""
    kind = table_kind(path, data.format)
    if kind in ("json", "parquet"):
        return None
    return i + (2 if kind in ("csv", "tsv") and data.header else 1)


def read_labelled(path: str | Path, data) -> list[dict]:
    """``{"text", "label"}`` examples from ``data.text_column`` and ``data.label_column`` (labels as text, mapped
    through ``data.label_map`` when given).

    Raises:
        DataError: a missing column (the columns found are named), an empty text or label, an unmapped label.
    """
    rows = read_table(path, data)
    cols = list(rows[0])
    for col, field in ((data.text_column, "text_column"), (data.label_column, "label_column")):
        if col not in cols:
            raise DataError(path, f"no column {col!r} (columns: {cols}); set data.{field}"
                                  + ("" if data.header else " to one of data.columns"))
    out = []
    for i, rec in enumerate(rows):
        text, label = rec[data.text_column], rec[data.label_column]
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, f"empty or non-text value in column {data.text_column!r}", row_line(data, i, path))
        if label is None or str(label).strip() == "":
            raise DataError(path, f"empty label in column {data.label_column!r}", row_line(data, i, path))
        if isinstance(label, (list, dict)):  # a JSON label that is a list or an object is no class name
            raise DataError(path, f"label in column {data.label_column!r} is a {type(label).__name__} ({label!r:.60}); "
                                  "a label is one text or number", row_line(data, i, path))
        if isinstance(text, (list, dict)):
            raise DataError(path, f"text in column {data.text_column!r} is a {type(text).__name__}, not text",
                            row_line(data, i, path))
        label = str(label).strip()
        if data.label_map:
            if label not in data.label_map:
                raise DataError(path, f"label {label!r} is not in data.label_map ({sorted(data.label_map)})", row_line(data, i, path))
            label = data.label_map[label]
        out.append({"text": text, "label": label})
    return out
