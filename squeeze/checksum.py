"""Checksums of cached files (teacher outputs, converted presets), checked before a cache is trusted."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def tree_hashes(folder: str | Path, hash_file=sha256_file, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: hash}`` of every file under ``folder`` (names in ``skip`` left out), in path order."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hash_file(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


MANIFEST = "squeeze_manifest.json"


def write_manifest(folder: str | Path) -> None:
    """Record the SHA-256 of every file of a cached folder (a downloaded model, a built tokenizer)."""
    import json

    files = tree_hashes(folder, skip=(MANIFEST,))
    (Path(folder) / MANIFEST).write_text(json.dumps(files, indent=1))


def verify_manifest(folder: str | Path) -> bool:
    """Does every file of the folder still match its manifest (none missing, none truncated or changed)?"""
    import json

    folder = Path(folder)
    try:
        files = json.loads((folder / MANIFEST).read_text())
        return bool(files) and all(sha256_file(folder / name) == digest for name, digest in files.items())
    except (OSError, ValueError):
        return False
