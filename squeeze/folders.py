"""Folders squeeze writes into (stores, storage, caches, reports): made and checked before any work starts."""

from __future__ import annotations

import os
from pathlib import Path


def why_unwritable(path: str | os.PathLike) -> str | None:
    """Make ``path`` (with its parents) if needed; the reason it cannot hold files, or None when it can."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot be created ({exc.strerror or exc})"
    if not os.access(folder, os.W_OK):
        return "not writable"
    return None
