"""DailyDialog text: one dialogue per line, utterances separated by ``__eou__``.

DailyDialog has no personas and no candidate replies. For Hits@k every turn gets ConvAI2's kind
of candidate set: the gold reply plus ``distractors`` replies drawn, seeded, from other dialogues
of the same file (``distractors: 0`` leaves the candidates empty, and Hits@k is then not reported).
"""

from __future__ import annotations

import random
from pathlib import Path

from squeeze.data.errors import DataError

EOU = "__eou__"


def looks_like(path: str | Path) -> bool:
    """Does the file's first non-empty line use DailyDialog's ``__eou__`` separator?"""
    with Path(path).open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                return EOU in line
    return False


def read_dailydialog(path: str | Path, distractors: int = 19, seed: int = 0, encoding: str = "utf-8-sig") -> list[dict]:
    """One example per reply (every utterance after the first): ``{"persona", "history", "reply", "candidates", "dialog"}``."""
    path = Path(path)
    dialogues = []
    with path.open(encoding=encoding) as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            turns = [u.strip() for u in raw.split(EOU)]
            turns = [u for u in turns if u]
            if len(turns) < 2:
                raise DataError(path, f"a dialogue needs at least two utterances separated by {EOU!r}", n)
            dialogues.append(turns)
    if not dialogues:
        raise DataError(path, "no dialogues")
    if distractors and len(dialogues) < 2:
        raise DataError(path, "distractor replies come from other dialogues; this file has one (set data.distractors: 0)")
    rng = random.Random(seed)
    replies = [(d, u) for d, turns in enumerate(dialogues) for u in turns[1:]]
    examples = []
    for d, turns in enumerate(dialogues):
        for i in range(1, len(turns)):
            cands = draw_candidates(rng, replies, d, turns[i], distractors) if distractors else []
            examples.append({"persona": [], "history": turns[:i], "reply": turns[i], "candidates": cands, "dialog": d})
    return examples


def add_candidates(examples: list[dict], k: int, seed: int) -> None:
    """Give every example the gold reply plus ``k`` replies of other dialogues (in place)."""
    rng = random.Random(seed)
    replies = [(ex["dialog"], ex["reply"]) for ex in examples]
    for ex in examples:
        ex["candidates"] = draw_candidates(rng, replies, ex["dialog"], ex["reply"], k)


def draw_candidates(rng: random.Random, replies: list[tuple[int, str]], dialog: int, gold: str, k: int) -> list[str]:
    """``gold`` and ``k`` distinct replies of other dialogues, shuffled (fewer when the file has fewer)."""
    picked: set[str] = set()
    for _ in range(50 * k):
        if len(picked) == k:
            break
        d, u = replies[rng.randrange(len(replies))]
        if d != dialog and u != gold:
            picked.add(u)
    cands = sorted(picked) + [gold]
    rng.shuffle(cands)
    return cands
