"""ParlAI FbDialog text as used by ConvAI2 / Persona-Chat.

Each dialogue restarts its line numbers at 1; ``your persona:`` lines carry the persona, the
others are ``N text<TAB>label<TAB><TAB>cand1|cand2|...`` (the label is among the candidates).
"""

from __future__ import annotations

from pathlib import Path

from squeeze.data.errors import DataError

PERSONA = "your persona:"


def read_parlai(path: str | Path, encoding: str = "utf-8-sig") -> list[dict]:
    """One example per turn: ``{"persona", "history", "reply", "candidates", "dialog"}``."""
    path = Path(path)
    examples: list[dict] = []
    persona: list[str] = []
    history: list[str] = []
    last, dialog = 0, -1
    with path.open(encoding=encoding) as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            num, _, rest = line.partition(" ")
            if not (num.isascii() and num.isdigit()):  # "²".isdigit() is True, and int("²") raises
                raise DataError(path, "each line must start with a turn number", n)
            if int(num) <= last:
                persona, history, dialog = [], [], dialog + 1
            elif last == 0:
                dialog += 1
            last = int(num)
            if rest.startswith(PERSONA):
                persona.append(rest[len(PERSONA):].strip())
                continue
            fields = rest.split("\t")
            if len(fields) < 2 or not fields[1].strip():
                raise DataError(path, "expected `text<TAB>label[<TAB><TAB>candidates]`", n)
            text, reply = fields[0].strip(), fields[1].strip()
            cands = [c.strip() for c in fields[3].split("|")] if len(fields) > 3 and fields[3] else []
            if cands and reply not in cands:
                raise DataError(path, "the label is not among the candidates", n)
            if cands and len(set(cands)) < 2:  # Hits@1 would be 1.0 whatever the model does
                raise DataError(path, "the candidates hold only the gold reply: ranking needs distractors", n)
            history = history + [text]
            examples.append({"persona": list(persona), "history": list(history), "reply": reply,
                             "candidates": cands, "dialog": dialog})
            history = history + [reply]
    if not examples:
        raise DataError(path, "no dialogue turns")
    return examples
