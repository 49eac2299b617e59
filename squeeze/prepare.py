"""Driver-side preparation of a sweep: load, split and tokenize once, cached on disk.

Trials receive the result through Ray's object store (``tune.with_parameters``), so a sweep of
any size tokenizes once, and trials on other nodes need no shared filesystem.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from squeeze import __version__, console, families, models, presets
from squeeze.checksum import sha256_file, tree_hashes
from squeeze.data import SPLITS, load_splits
from squeeze.registry import get_task

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    task: str
    data_name: str
    sizes: dict[str, int]
    labels: list[str] | None
    tokenizer: Any
    features: dict[str, list[dict]]
    examples: dict[str, list[dict]]
    key: str

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0


def _tok_stamp(tokenizer_dir) -> str:
    if tokenizer_dir is None:
        return ""
    f = Path(tokenizer_dir) / "tokenizer.json"
    return hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else str(tokenizer_dir)


def cache_key(sweep, tokenizer_dir=None) -> str:
    spec = {"tokenizer": _tok_stamp(tokenizer_dir), "task": sweep.task, "data": sweep.data.model_dump(mode="json"), "model": sweep.model.name,
            "max_length": sweep.train.max_length, "version": __version__, "files": _file_stamps(sweep.data)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _file_stamps(data) -> list:
    """Each data file by its contents: a copy with a new modification time (a re-synced dataset, a fresh
    checkout, data restored on another machine) keeps the stage's identity; an edited file changes it."""
    paths = list(data.files) + [p for p in (data.train, data.dev, data.test) if isinstance(p, str) and p]  # dev: 0.1 is a fraction
    return [(p, _contents(Path(p))) for p in paths]


def _contents(path: Path) -> str:
    """SHA-256 of a file, or of a folder's file names and hashes."""
    if path.is_dir():
        return hashlib.sha256(json.dumps(tree_hashes(path, _file_hash)).encode()).hexdigest()
    return _file_hash(path)


def _file_hash(path: Path) -> str:
    st = path.stat()
    return _hash_once(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _hash_once(path: str, size: int, mtime_ns: int) -> str:
    """A file is hashed once per process while its size and modification time stay the same."""
    return sha256_file(path)


def _write(path: Path, rows: list[dict]) -> None:
    """Written whole under a temporary name, then renamed: a reader never maps a file being rewritten."""
    tmp = path.with_name(path.name + ".partial")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, (t := pa.Table.from_pylist(rows)).schema) as w:
        w.write_table(t)
    os.replace(tmp, path)


def _read(path: Path) -> list[dict]:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all().to_pylist()


def _load_cached(d: Path, sweep) -> Prepared | None:
    import transformers

    try:
        meta = json.loads((d / "meta.json").read_text())
        tok = transformers.AutoTokenizer.from_pretrained(d / "tokenizer")
        feats = {s: _read(d / f"{s}.features.arrow") for s in SPLITS}
        exs = {s: _read(d / f"{s}.examples.arrow") for s in SPLITS}
    except Exception as exc:  # missing or corrupt cache: rebuild
        if d.exists():
            log.warning("tokenization cache %s unusable (%s); rebuilding", d, exc)
        return None
    return Prepared(sweep.task, meta["data_name"], meta["sizes"], meta["labels"], tok, feats, exs, d.name)


def shared_tokenizers(sweeps, cache_dir: str | Path) -> dict[str, str]:
    """One tokenizer per tiny preset for a whole study: built from the training text of every sweep of the file
    that uses the preset and has no source, in file order; returns ``{sweep name: tokenizer folder}``.

    Every stage then tokenizes alike: an IMP stage inherits its prune stage's tokenizer, and its baseline must use
    the same one for their perplexities to compare (built per sweep, the same replies were 4,310 vs 2,989 tokens).
    """
    texts: dict[str, list[str]] = {}
    users: dict[str, list[str]] = {}
    for s in sweeps:
        if s.model.name in models.TINY and s.source is None:
            task = get_task(s.task)
            texts.setdefault(s.model.name, []).extend(task.texts(load_splits(task, s.data).splits["train"]))
            users.setdefault(s.model.name, []).append(s.name)
    out = {}
    for preset, t in texts.items():
        folder = str(models.tiny_tokenizer_dir(preset, t, cache_dir))
        out.update({name: folder for name in users[preset]})
    return out


def _encode(task, examples: list[dict], tok, labels, max_length: int, what: str, chunk: int = 2000) -> list:
    """``task.encode`` in chunks with a progress line at most every ``console.PROGRESS_EVERY_S`` (a large dialogue
    file takes minutes); a task whose encoding is not per example is encoded whole."""
    if not task.encodes_per_example or len(examples) <= chunk:
        return task.encode(examples, tok, labels, max_length)
    out, t0, said = [], time.perf_counter(), time.perf_counter()
    for i in range(0, len(examples), chunk):
        out.extend(task.encode(examples[i:i + chunk], tok, labels, max_length))
        now = time.perf_counter()
        if now - said >= console.PROGRESS_EVERY_S and len(out) < len(examples):
            said, rate = now, len(out) / max(now - t0, 1e-9)
            console.say(f"{what}: {len(out):,}/{len(examples):,} examples, {rate:,.0f}/s, "
                        f"ETA {(len(examples) - len(out)) / max(rate, 1e-9):.0f} s")
    return out


def prepare(sweep, cache_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Prepared:
    """Load, split, tokenize (once per sweep; cached by data, tokenizer, model and max length).

    ``tokenizer_dir``: the tokenizer of the source model (a sweep that starts from another
    sweep's trials must tokenize as its source did).

    Raises:
        DataError: when a data file or source cannot be used.
    """
    key = cache_key(sweep, tokenizer_dir)
    d = Path(cache_dir) / "encoded" / key
    d.parent.mkdir(parents=True, exist_ok=True)
    # one writer per cache folder: stages that start together (a DAG's siblings over one baseline) and trials read
    # and write the same files; rewriting a file another thread has memory-mapped kills the process (SIGBUS)
    with open(str(d) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _load_cached(d, sweep)
        if cached is not None:
            return cached
        return _prepare(sweep, d, key, cache_dir, tokenizer_dir)


def _prepare(sweep, d: Path, key: str, cache_dir, tokenizer_dir) -> Prepared:
    task = get_task(sweep.task)
    bundle = load_splits(task, sweep.data)
    labels = task.labels(bundle.splits)
    if tokenizer_dir is not None:
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tok = models.load_tokenizer(sweep.model.name, task.texts(bundle.splits["train"]), cache_dir)
    tok = task.prepare_tokenizer(tok)
    tok.truncation_side = sweep.data.truncation_side
    n = sum(len(bundle.splits[s]) for s in SPLITS)
    console.say(f"[{sweep.name}] tokenizing {n:,} examples of {bundle.name} (cached for the next run)")
    t0 = time.perf_counter()
    feats = {s: _encode(task, bundle.splits[s], tok, labels, sweep.train.max_length, f"[{sweep.name}] tokenizing {s}")
             for s in SPLITS}
    took = time.perf_counter() - t0
    console.say(f"[{sweep.name}] tokenized in {took:.1f} s ({n / max(took, 1e-9):,.0f} examples/s)")
    fam = families.family_of_type(presets.model_type(sweep.model.name))
    if fam is not None and not fam.token_types:  # Llama and DistilBERT take no token_type_ids (dialogue's speakers)
        feats = {s: [{k: v for k, v in f.items() if k != "token_type_ids"} for f in fs] for s, fs in feats.items()}
    d.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(d / "tokenizer")
    for s in SPLITS:
        _write(d / f"{s}.features.arrow", feats[s])
        _write(d / f"{s}.examples.arrow", bundle.splits[s])
    (d / "meta.json").write_text(json.dumps({"data_name": bundle.name, "sizes": bundle.sizes, "labels": labels}))
    log.info("prepared %s: %s", bundle.name, bundle.sizes)
    return Prepared(sweep.task, bundle.name, bundle.sizes, labels, tok, feats, bundle.splits, key)
