"""The hook interface every technique implements; the loop calls these and nothing else."""

from __future__ import annotations

from typing import Optional, Protocol

import torch


class Technique(Protocol):
    name: str
    needs_hidden_states: bool

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Before training: wrap, prune, or swap modules; returns the model to train."""

    def extra_loss(self, batch: dict, outputs) -> Optional[torch.Tensor]:
        """Added to the task loss each step (e.g. distillation); None for nothing."""

    def after_step(self, step: int) -> None:
        """After each optimizer step (e.g. prune on a schedule, re-apply a mask)."""

    def finalize(self, model: torch.nn.Module) -> torch.nn.Module:
        """After training, before test evaluation (e.g. convert to int8)."""


class NoOp:
    """Default hook bodies, so a technique only writes the hooks it needs."""

    name = "noop"
    needs_hidden_states = False

    def prepare(self, model):
        return model

    def extra_loss(self, batch, outputs):
        return None

    def after_step(self, step):
        return None

    def finalize(self, model):
        return model
