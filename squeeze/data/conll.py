"""Column-format NER files (CoNLL-2003, WNUT, CoNLL-U-like exports): one token per line, a blank line between
sentences, ``-DOCSTART-`` lines skipped, tags in IOB1, IOB2 or BIO (detected or declared).

The token and tag columns are options (either order, any number of extra columns, comment lines skipped),
and a layout that does not fit is refused instead of read in another: the same column twice, or a "tag"
column whose values are mostly not ``O``/``B-x``/``I-x`` (a label-first file read token-first).
"""

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


def _looks_like_tag(value: str) -> bool:
    return value == "O" or (len(value) > 2 and value[:2] in ("B-", "I-"))


def _check_columns(path: Path, lines: list[tuple[int, list[str]]], token_column: int, tag_column: int) -> None:
    """Refuse a layout that would be read silently wrong: one column for both, or a tag column of non-tags."""
    width = len(lines[0][1])
    tok, tag = token_column % width, tag_column % width
    if tok == tag:
        raise DataError(path, f"token_column {token_column} and tag_column {tag_column} are the same column of {width}; "
                              "set data.token_column and data.tag_column (label-first files: tag_column 0, token_column 1)",
                        lines[0][0])
    values = [cols[tag_column] for _, cols in lines[:2000]]
    share = sum(map(_looks_like_tag, values)) / len(values)
    if share < 0.9:
        other = [c for c in range(width) if c != tag and sum(_looks_like_tag(cols[c]) for _, cols in lines[:2000])
                 >= 0.9 * len(values)]
        raise DataError(path, f"column {tag} does not look like tags ({share:.0%} of its values are O, B-x or I-x)"
                              + (f"; column {other[0]} does: set data.tag_column: {other[0]}" if other else
                                 "; set data.tag_column") + " (and data.token_column)", lines[0][0])


def read_conll(path: str | Path, tag_column: int = -1, scheme: Literal["auto", "iob1", "iob2"] = "auto",
               token_column: int = 0, comment_prefix: str | None = None, delimiter: str | None = None,
               encoding: str = "utf-8-sig") -> list[dict]:
    """Read sentences as ``{"tokens", "tags"}`` with tags in IOB2.

    Args:
        path: the file; columns separated by ``delimiter`` (default: spaces or tabs).
        tag_column, token_column: indexes of the tag (default: last) and token (default: first) columns.
        scheme: ``iob1`` or ``iob2`` (BIO) as declared, or ``auto``: IOB1 if any sentence is not valid IOB2.
        comment_prefix: lines starting with it are skipped (``#`` in CoNLL-U-like exports).
    """
    path = Path(path)
    lines: list[tuple[int, list[str] | None]] = []  # (line number, columns), None between sentences
    width = None
    with path.open(encoding=encoding) as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n") if delimiter else raw.strip()
            if comment_prefix and line.startswith(comment_prefix):
                continue
            if not line.strip() or line.startswith("-DOCSTART-"):
                lines.append((n, None))
                continue
            cols = line.split(delimiter) if delimiter else line.split()
            if len(cols) < 2:
                raise DataError(path, f"expected a token and a tag column, got {len(cols)} column(s)"
                                      + ("" if delimiter else " (set data.delimiter if tokens hold spaces)"), n)
            if width is not None and len(cols) != width:
                raise DataError(path, f"expected {width} columns like the lines before, got {len(cols)}", n)
            width = len(cols)
            lines.append((n, cols))
    data_lines = [(n, cols) for n, cols in lines if cols is not None]
    if not data_lines:
        raise DataError(path, "no sentences")
    for name, index in (("tag_column", tag_column), ("token_column", token_column)):
        if not -width <= index < width:
            raise DataError(path, f"{name} {index} is out of range for {width} columns", data_lines[0][0])
    _check_columns(path, data_lines, token_column, tag_column)
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    for n, cols in lines:
        if cols is None:
            if tokens:
                sentences.append({"tokens": tokens, "tags": tags})
            tokens, tags = [], []
            continue
        _check_tag(path, n, cols[tag_column])
        tokens.append(cols[token_column])
        tags.append(cols[tag_column])
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    if not sentences:
        raise DataError(path, "no sentences")
    if scheme == "iob2":
        bad = next((s for s in sentences if not is_iob2(s["tags"])), None)
        if bad is not None:
            i = next(k for k, (a, b) in enumerate(zip(bad["tags"], iob1_to_iob2(bad["tags"]))) if a != b)
            raise DataError(path, f"declared scheme: iob2, but the sentence starting {' '.join(bad['tokens'][:6])!r} "
                                  f"opens an entity with {bad['tags'][i]!r} (token {bad['tokens'][i]!r}): that is IOB1; "
                                  "set data.scheme to iob1 or auto (scored as IOB2 it would find no entity)")
    if scheme == "iob1" or (scheme == "auto" and not all(is_iob2(s["tags"]) for s in sentences)):
        for s in sentences:
            s["tags"] = iob1_to_iob2(s["tags"])
    return sentences
