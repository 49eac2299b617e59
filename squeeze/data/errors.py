"""The one data error type: it names the file and, where known, the line."""

from __future__ import annotations


class DataError(ValueError):
    """A data file or data source that cannot be used, with where and why."""

    def __init__(self, path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path, self.line = str(path), line
