"""Trial checkpoints: weights in safetensors, optimizer state through ``torch.load(weights_only=True)``.

Nothing in a checkpoint is unpickled as arbitrary objects, so a checkpoint from shared storage
cannot run code when loaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from squeeze.loop import Loop, LoopState


class CheckpointError(ValueError):
    """A checkpoint that is missing files or cannot be read."""


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Cloning breaks weight tying (GPT-2's lm_head/wte), which safetensors refuses to save shared.
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def save(loop: Loop, directory: str | Path) -> Path:
    """Write model, best-dev model, optimizer, scheduler and loop state into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file(_plain(loop.model.state_dict()), d / "model.safetensors")
    if loop.best_weights is not None:
        save_file(_plain(loop.best_weights), d / "best.safetensors")
    torch.save({"optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict()}, d / "optim.pt")
    (d / "state.json").write_text(json.dumps(asdict(loop.state)))
    return d


def load(loop: Loop, directory: str | Path) -> LoopState:
    """Restore ``loop`` from ``directory`` in place.

    Raises:
        CheckpointError: naming the file that is missing or unreadable.
    """
    d = Path(directory)
    for name in ("model.safetensors", "optim.pt", "state.json"):
        if not (d / name).is_file():
            raise CheckpointError(f"checkpoint {d}: missing {name}")
    try:
        loop.model.load_state_dict(load_file(d / "model.safetensors", device=str(loop.device)))
        if (d / "best.safetensors").is_file():
            loop.best_weights = load_file(d / "best.safetensors")
        optim = torch.load(d / "optim.pt", map_location=loop.device, weights_only=True)
        loop.optimizer.load_state_dict(optim["optimizer"])
        loop.scheduler.load_state_dict(optim["scheduler"])
        loop.state = LoopState(**json.loads((d / "state.json").read_text()))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint {d} is corrupt: {type(exc).__name__}: {exc}") from None
    return loop.state
