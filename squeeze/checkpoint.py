"""Trial checkpoints: weights in safetensors, optimizer state through ``torch.load(weights_only=True)``.

A checkpoint holds the model, the best-dev weights, optimizer and scheduler, the loop's position
and every technique's own state (``Technique.state_dict``: IMP's masks and schedule), so a trial
restored from it continues as if it had never stopped. Nothing in a checkpoint is unpickled as
arbitrary objects, so a checkpoint from shared storage cannot run code when loaded.
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
    techniques = []
    for i, hook in enumerate(loop.hooks):
        state = hook.state_dict()
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
        if tensors:
            save_file(tensors, d / f"technique_{i}.safetensors")
        techniques.append({"name": hook.name, "values": {k: v for k, v in state.items() if k not in tensors}})
    (d / "state.json").write_text(json.dumps({"loop": asdict(loop.state), "techniques": techniques}))
    return d


def _technique_states(loop: Loop, d: Path, saved: list[dict]) -> None:
    if [t["name"] for t in saved] != [h.name for h in loop.hooks]:
        raise CheckpointError(f"checkpoint {d} holds techniques {[t['name'] for t in saved]}, "
                              f"the trial runs {[h.name for h in loop.hooks]}")
    for i, (hook, entry) in enumerate(zip(loop.hooks, saved)):
        state = dict(entry["values"])
        if (d / f"technique_{i}.safetensors").is_file():
            state.update(load_file(d / f"technique_{i}.safetensors"))
        if state:
            hook.load_state_dict(state)


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
        saved = json.loads((d / "state.json").read_text())
        loop.state = LoopState(**saved["loop"])
        _technique_states(loop, d, saved["techniques"])
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint {d} is corrupt: {type(exc).__name__}: {exc}") from None
    return loop.state
