"""Dialogues as JSON conversations or as turn tables, for the dialogue task.

- ``chat``: one conversation per JSON Lines row (or per item of a JSON array), as Hugging Face chat datasets
  store them: ``{"messages": [{"role": "user", "content": "..."}, ...]}``. ``system`` messages become the persona.
- ``turns``: one utterance per row of a table (CSV, TSV, JSON Lines, Parquet) with ``dialogue_column``,
  ``text_column`` and, optionally, ``turn_column`` (the order within a dialogue; default: file order) and
  ``speaker_column`` (consecutive utterances of one speaker are joined into one turn).

Every turn after a dialogue's first is a reply to train on. These files hold no candidate replies, so, as
ConvAI2 built its candidate sets, each reply gets the gold one plus ``distractors`` replies drawn, seeded,
from other dialogues (``distractors: 0``: no Hits@k).
"""

from __future__ import annotations

import random
from pathlib import Path

from squeeze.data.dailydialog import draw_candidates
from squeeze.data.errors import DataError
from squeeze.data.tabular import read_table, row_line


def _examples(path: Path, dialogues: list[tuple[list[str], list[str]]], distractors: int, seed: int) -> list[dict]:
    dialogues = [(p, t) for p, t in dialogues if len(t) >= 2]
    if not dialogues:
        raise DataError(path, "no dialogue has two turns (a context and a reply)")
    if distractors and len(dialogues) < 2:
        raise DataError(path, "distractor replies come from other dialogues; this file has one (set data.distractors: 0)")
    rng = random.Random(seed)
    replies = [(d, u) for d, (_, turns) in enumerate(dialogues) for u in turns[1:]]
    out = []
    for d, (persona, turns) in enumerate(dialogues):
        for i in range(1, len(turns)):
            cands = draw_candidates(rng, replies, d, turns[i], distractors) if distractors else []
            out.append({"persona": persona, "history": turns[:i], "reply": turns[i], "candidates": cands, "dialog": d})
    return out


def has_messages(path: str | Path) -> bool:
    """Does the JSON file's first record hold a ``messages`` list (the chat layout)?"""
    import json

    with Path(path).open(encoding="utf-8-sig", errors="replace") as fh:
        head = fh.read(1 << 16).lstrip()
    if head.startswith("["):
        head = head[1:].lstrip()
    try:
        first, _ = json.JSONDecoder().raw_decode(head)
    except ValueError:
        return False
    return isinstance(first, dict) and isinstance(first.get("messages"), list)


def read_chat(path: str | Path, data) -> list[dict]:
    """Conversations with a ``messages`` list of ``{"role", "content"}``."""
    path = Path(path)
    dialogues = []
    for i, rec in enumerate(read_table(path, data, "json")):
        messages = rec.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                     for m in messages or [None]):
            raise DataError(path, f"expected a 'messages' list of {{role, content}} objects (keys: {sorted(rec)}); "
                                  "for one utterance per row use data.format: turns", i + 1)
        persona = [m["content"].strip() for m in messages if m.get("role") == "system" and m["content"].strip()]
        turns = [m["content"].strip() for m in messages if m.get("role") != "system" and m["content"].strip()]
        dialogues.append((persona, turns))
    return _examples(path, dialogues, data.distractors, data.seed)


def read_turns(path: str | Path, data) -> list[dict]:
    """One utterance per row, grouped by ``data.dialogue_column``."""
    path = Path(path)
    rows = read_table(path, data)
    cols = list(rows[0])
    for col, field in ((data.dialogue_column, "dialogue_column"), (data.text_column, "text_column"),
                       (data.turn_column, "turn_column"), (data.speaker_column, "speaker_column")):
        if col is not None and col not in cols:
            raise DataError(path, f"no column {col!r} (columns: {cols}); set data.{field}")
    groups: dict[str, list[tuple[float, int, str | None, str]]] = {}
    for i, r in enumerate(rows):
        text = str(r[data.text_column] or "").strip()
        if not text:
            raise DataError(path, f"empty utterance in column {data.text_column!r}", row_line(data, i, path))
        order = i
        if data.turn_column:
            try:
                order = float(r[data.turn_column])
            except (TypeError, ValueError):
                raise DataError(path, f"turn {r[data.turn_column]!r} in column {data.turn_column!r} is not a number",
                                row_line(data, i, path)) from None
        speaker = r[data.speaker_column] if data.speaker_column else None
        groups.setdefault(str(r[data.dialogue_column]), []).append((order, i, speaker, text))
    dialogues = []
    for rows_ in groups.values():
        turns: list[str] = []
        last = object()
        for _, _, speaker, text in sorted(rows_):
            if speaker is not None and speaker == last:
                turns[-1] += " " + text
            else:
                turns.append(text)
            last = speaker
        dialogues.append(([], turns))
    return _examples(path, dialogues, data.distractors, data.seed)
