"""The hook interface every technique implements; the loop and the trial call these only.

A technique is constructed with a ``TechniqueContext`` (what it may read and call) and its own
validated ``Params``. Post-training techniques (dq) run with ``train.epochs: 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch
from pydantic import BaseModel, ConfigDict


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class TechniqueContext:
    task: Any                                      # the Task object
    prepared: Any                                  # squeeze.prepare.Prepared
    model_name: str                                # preset, hub id or directory of the pre-trained model
    params: BaseModel                              # this technique's validated Params
    evaluate: Callable[[torch.nn.Module], dict]    # dev metrics of a model
    log_metrics: Callable[[dict, int], None]       # to the trial's MLflow run
    cache_dir: str
    seed: int = 0
    device: str = "cpu"
    source_dir: Optional[str] = None               # model folder of the source trial (teacher, pruned model)
    source_id: Optional[str] = None                # its MLflow run id
    info: dict = field(default_factory=dict)       # metrics a technique wants logged at the end


class Technique(Protocol):
    name: str
    Params: type[BaseModel]
    needs_hidden_states: bool
    eval_device: Optional[str]                     # "cpu" for int8 models

    def initial_model(self) -> Optional[torch.nn.Module]:
        """The model to train, when the technique builds its own (a PKD student); else None."""

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Before training: wrap, mask or swap modules; returns the model to train."""

    def extra_loss(self, batch: dict, outputs, indices: list[int]) -> Optional[torch.Tensor]:
        """Added to the task loss each step; ``indices`` are the batch's example indices."""

    def after_step(self, step: int) -> None:
        """After each optimizer step (prune on a schedule, re-apply a mask)."""

    def finalize(self, model: torch.nn.Module) -> torch.nn.Module:
        """After training, before the final evaluation (convert to int8)."""


class NoOp:
    """Default hook bodies, so a technique only writes the hooks it needs."""

    name = "noop"
    Params = NoParams
    needs_hidden_states = False
    eval_device: Optional[str] = None
    conv1d_to_linear = False

    def __init__(self, ctx: TechniqueContext | None = None):
        self.ctx = ctx
        self.p = ctx.params if ctx is not None else self.Params()

    def initial_model(self):
        return None

    def prepare(self, model):
        return model

    def extra_loss(self, batch, outputs, indices):
        return None

    def after_step(self, step):
        return None

    def finalize(self, model):
        return model
