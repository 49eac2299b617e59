"""What every codec answers (``squeeze.formats``): a protocol, and the format file every folder carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch

FORMAT_FILE = "squeeze_format.json"


class Codec(Protocol):
    name: str
    runtime: str          # what executes the stored form where it is served ("onnxruntime MatMulNBits (CPU)", ...)
    devices: tuple        # where the model can run: ("cpu", "cuda") or ("cpu",)

    def save(self, model: torch.nn.Module, directory: Path) -> dict:
        """Write the weights (and config) into ``directory``; returns the fields ``squeeze_format.json`` records."""

    def load(self, directory: Path, fmt: dict) -> torch.nn.Module:
        """Rebuild the model ``save`` wrote, bit for bit."""

    def weights_file(self, fmt: dict) -> str:
        """The name of the folder's weight file."""

    def size(self, model: torch.nn.Module) -> dict[str, float]:
        """``size/params``, ``size/nonzero``, ``size/memory_mb`` of the model as stored."""

    def embedding_bytes(self, model: torch.nn.Module, directory: Path) -> int:
        """Bytes the embedding tables take in the saved folder."""

    def serving(self, model: torch.nn.Module, example: dict | None = None) -> tuple[torch.nn.Module, str]:
        """The model as its runtime serves it (for latency), and a line naming that runtime (and, where the format
        has no fast kernel on this machine, saying so)."""

    def decoder(self, model: torch.nn.Module, threads: int | None = None):
        """A causal LM as its runtime decodes it at batch 1 on the CPU: an object whose ``generate(prompt, new_tokens)``
        returns ``(tokens, seconds after the prompt)``, and a line naming that runtime; ``(None, why)`` where the
        format cannot decode."""

    def readme(self, fmt: dict) -> str:
        """The folder's README: what it holds and how to load it."""


def read_format(directory: str | Path) -> dict:
    """The ``squeeze_format.json`` of a saved model folder.

    Raises:
        ValueError: when the folder was not written by squeeze.
    """
    d = Path(directory)
    if not (d / FORMAT_FILE).is_file():
        raise ValueError(f"{d}: no {FORMAT_FILE}; not a model saved by squeeze")
    return json.loads((d / FORMAT_FILE).read_text())


LOAD_SNIPPET = ("```python\nimport squeeze\nmodel = squeeze.load(folder)             # the model, bit for bit\n\n"
                "import mlflow\nmodel = mlflow.pyfunc.load_model(folder)  # predicts on a DataFrame of texts\n```\n")


def set_module(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` of ``model`` (a codec rebuilding its layers)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
