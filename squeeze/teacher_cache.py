"""Teacher outputs computed once per (teacher, dataset, max length), memory-mapped from Arrow.

Every PKD trial of a study reads the same file instead of running the teacher (the paper could
not do this for GPT-2: its teacher outputs were too large to load; memory mapping never loads
them whole). The size is estimated and logged before writing; the file's SHA-256 is kept beside
it and checked on open, and a cache that is corrupt or built for something else is rebuilt.
Concurrent trials take a file lock, so one builds while the others wait.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from squeeze import console
from squeeze.checksum import sha256_file
from squeeze.tasks.base import collate, to_device

log = logging.getLogger(__name__)
SCHEMA = pa.schema([("logits", pa.list_(pa.float32())), ("index", pa.list_(pa.int32())), ("hidden", pa.list_(pa.float32())),
                    ("n_pos", pa.int32()), ("n_logit", pa.int32()), ("n_hidden", pa.int32())])


def estimate_bytes(features: list[dict], kind: str, n_out: int, n_layers: int, hidden: int) -> int:
    """Bytes the cache will take: positions x (logits + matched hidden states) x 4 (+ top-k indices)."""
    n_pos = len(features) if kind == "sequence" else sum(sum(1 for l in f["labels"] if l != -100) for f in features)
    return n_pos * (n_out * (8 if kind == "reply" else 4) + n_layers * hidden * 4)


class TeacherCache:
    def __init__(self, path: Path):
        source = pa.memory_map(str(path))
        self.table = pa.ipc.open_file(source).read_all()
        self.columns = {c: self.table.column(c) for c in self.table.column_names}

    @staticmethod
    def key(pkd, ctx) -> str:
        spec = {"teacher": str(pkd.teacher_id), "data": ctx.prepared.key, "layers": pkd.t_layers, "top_k": pkd.top_k,
                "kind": pkd.kind}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]

    @classmethod
    def open_or_build(cls, pkd, ctx) -> "TeacherCache":
        d = Path(ctx.cache_dir) / "teacher"
        d.mkdir(parents=True, exist_ok=True)
        key = cls.key(pkd, ctx)
        path, meta = d / f"{key}.arrow", d / f"{key}.json"
        n = len(ctx.prepared.features["train"])
        with open(d / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                ok = meta.is_file() and json.loads(meta.read_text()) == {"sha256": sha256_file(path), "rows": n, "key": key}
            except (OSError, ValueError):
                ok = False
            if not ok:
                if path.exists():
                    log.warning("teacher cache %s is corrupt or stale; rebuilding", path)
                cls.build(pkd, ctx, path)
                meta.write_text(json.dumps({"sha256": sha256_file(path), "rows": n, "key": key}))
                ctx.info["pkd/cache_built"] = 1
        cache = cls(path)
        ctx.info["pkd/cache_mb"] = path.stat().st_size / 2**20
        return cache

    @staticmethod
    def build(pkd, ctx, path: Path) -> None:
        feats = ctx.prepared.features["train"]
        cfg = pkd.teacher.config
        n_out = pkd.top_k if pkd.kind == "reply" else cfg.num_labels
        est = estimate_bytes(feats, pkd.kind, n_out, len(pkd.t_layers), cfg.hidden_size)
        log.info("teacher cache: writing about %.1f MB to %s", est / 2**20, path)
        ctx.info["pkd/cache_estimated_mb"] = est / 2**20
        tmp = path.with_suffix(".tmp")
        start = time.time()
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
            for i in range(0, len(feats), 32):
                if i:
                    rate = i / max(time.time() - start, 1e-9)
                    console.progress(f"teacher cache {i:,}/{len(feats):,} rows, {rate:.1f} rows/s, "
                                     f"ETA {(len(feats) - i) / rate:.0f} s")
                batch = to_device(collate(feats[i:i + 32], ctx.prepared.pad_id), ctx.device)
                rows = pkd.teacher_rows(batch)
                writer.write_batch(pa.record_batch([
                    [r[0].float().cpu().numpy().ravel() for r in rows],
                    [(r[1].cpu().numpy().ravel().astype(np.int32) if r[1] is not None else np.zeros(0, np.int32)) for r in rows],
                    [r[2].float().cpu().numpy().ravel() for r in rows],
                    [int(r[2].shape[1]) for r in rows], [int(r[0].shape[-1]) for r in rows],
                    [int(r[2].shape[-1]) for r in rows]], schema=SCHEMA))
        tmp.replace(path)

    def rows(self, indices: list[int], device) -> list[tuple]:
        out = []
        c = self.columns
        for i in indices:
            n_pos, n_logit, n_hid = c["n_pos"][i].as_py(), c["n_logit"][i].as_py(), c["n_hidden"][i].as_py()
            lg = torch.tensor(c["logits"][i].values.to_numpy(zero_copy_only=False)).view(-1, n_logit)
            idx = c["index"][i].values.to_numpy(zero_copy_only=False)
            idx = torch.from_numpy(idx.astype(np.int64)).view(-1, n_logit) if len(idx) else None
            hs = torch.tensor(c["hidden"][i].values.to_numpy(zero_copy_only=False)).view(-1, n_pos, n_hid)
            out.append((lg.to(device), None if idx is None else idx.to(device), hs.to(device)))
        return out
