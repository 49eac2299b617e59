"""Where a trial keeps its checkpoints between drivers, and how a resumed trial knows they are its own.

A trial writes each epoch's checkpoint (``squeeze.checkpoint``: safetensors, JSON and a weights-only
``torch.load`` file) to ``<stage folder>/points/<point key>/epoch-NNNN`` on the stage's storage (a local
folder or a ``s3://``-style URI, through pyarrow's filesystem of it), and records the folder with a SHA-256
digest of its files in its MLflow run (tag ``squeeze.checkpoint``). A retried or resumed trial loads only a
checkpoint whose files match the digest recorded in MLflow; anything else in the storage folder (a planted
``tuner.pkl``, a changed checkpoint) is never read, never unpickled. Once the trial's model is in MLflow its
checkpoints are deleted (``keep``: the newest N while it runs).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

CHECKPOINT_TAG = "squeeze.checkpoint"


class CheckpointMismatch(ValueError):
    """The checkpoint folder does not hold what squeeze recorded there."""


def _fs(root: str):
    import pyarrow.fs

    if "://" in root:
        return pyarrow.fs.FileSystem.from_uri(root)
    return pyarrow.fs.LocalFileSystem(), str(Path(root).resolve())


def digest(folder: str | Path) -> str:
    """SHA-256 over the names and SHA-256s of every file under ``folder``."""
    from squeeze.checksum import tree_hashes

    return hashlib.sha256(json.dumps(tree_hashes(folder), sort_keys=True).encode()).hexdigest()


class PointStore:
    """The checkpoints of one point (trial) of a stage."""

    def __init__(self, stage_dir: str, point_key: str, keep: int = 1):
        self.fs, base = _fs(stage_dir)
        self.root = f"{base.rstrip('/')}/points/{point_key}"
        self.keep = max(1, keep)

    def save(self, write: Callable[[Path], object], epoch: int) -> dict:
        """Write a checkpoint with ``write(folder)`` and upload it; returns its record (``prune`` drops older ones
        once the record is in MLflow, so the recorded checkpoint always exists). On a local folder it is written in
        place (under a temporary name, renamed when complete): no second copy of a model-sized checkpoint."""
        import pyarrow.fs

        name = f"epoch-{epoch:04d}"
        target = f"{self.root}/{name}"
        if isinstance(self.fs, pyarrow.fs.LocalFileSystem):
            partial = Path(f"{target}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            write(partial)
            record = {"dir": name, "digest": digest(partial)}
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
            return record
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp))
            record = {"dir": name, "digest": digest(tmp)}
            self.fs.create_dir(target, recursive=True)
            pyarrow.fs.copy_files(tmp, target, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                  destination_filesystem=self.fs)
        return record

    def prune(self) -> None:
        """Keep the newest ``keep`` checkpoints."""
        for old in self._names()[:-self.keep]:
            self.fs.delete_dir(f"{self.root}/{old}")

    def _names(self) -> list[str]:
        import pyarrow.fs

        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.root, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                      and i.base_name.startswith("epoch-") and not i.base_name.endswith(".partial"))

    def load(self, record: dict, read: Callable[[Path], object] | None = None) -> None:
        """Download the recorded checkpoint, check its digest, then ``read(folder)`` (``None``: only check).

        Raises:
            FileNotFoundError: the recorded folder is gone.
            CheckpointMismatch: its files are not the ones squeeze recorded.
        """
        import pyarrow.fs

        source = f"{self.root}/{record.get('dir', '')}"
        with tempfile.TemporaryDirectory() as tmp:
            if self.fs.get_file_info(source).type != pyarrow.fs.FileType.Directory:
                raise FileNotFoundError(f"checkpoint {source} recorded in MLflow is missing")
            pyarrow.fs.copy_files(source, tmp, source_filesystem=self.fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
            if digest(tmp) != record.get("digest"):
                raise CheckpointMismatch(f"checkpoint {source} does not match the digest squeeze recorded in MLflow "
                                         "when it wrote it: it was changed by someone else; delete the folder to train "
                                         "that trial from the start")
            if read is not None:
                read(Path(tmp))

    def clear(self) -> None:
        """Delete every checkpoint of the point (its model is in MLflow)."""
        import pyarrow.fs

        if self.fs.get_file_info(self.root).type == pyarrow.fs.FileType.Directory:
            self.fs.delete_dir(self.root)


def clear_tune_folder(stage_dir: str) -> None:
    """Delete what Tune wrote for a stage (its experiment state and trial folders: squeeze never reads them back),
    keeping ``points/`` (the checkpoints of trials that did not finish)."""
    import pyarrow.fs

    fs, base = _fs(stage_dir)
    for info in fs.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True)):
        if info.base_name == "points":
            continue
        if info.type == pyarrow.fs.FileType.Directory:
            fs.delete_dir(info.path)
        else:
            fs.delete_file(info.path)
    if "://" not in stage_dir:
        points = Path(base) / "points"
        if points.is_dir() and not any(points.iterdir()):
            shutil.rmtree(points, ignore_errors=True)
