"""The hook interface every technique implements, and what a technique declares about itself.

A technique is constructed with a ``TechniqueContext`` (what it may read and call) and its own
validated ``Params``. Its class declares its rules, which the config checks before Ray starts:
whether it is post-training (no epochs of its own), the source stage it needs, the tasks it
supports. State that its hooks change during training (IMP's masks and schedule) is returned by
``state_dict`` and restored by ``load_state_dict``, so a trial resumed from its checkpoint is
the same trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Protocol

import torch
from pydantic import BaseModel, ConfigDict


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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
    post_training: bool                            # acts on a trained source model; its sweep trains 0 epochs
    needs_source: Optional[str]                    # what its `source:` stage must provide (None: no source needed)
    source_technique: tuple[str, ...]              # techniques one of which the source stage must run (empty: any)
    pretraining_stage: bool                        # runs on the pre-training task (the IMP prune stage)
    needs_family: bool                             # reads the model's layer map (squeeze.families): checked up front
    needs_hidden_states: bool
    acts_on_linear: bool                           # compresses the model's nn.Linear layers (finds none once replaced)
    replaces_linear: bool                          # its finalize replaces the nn.Linear layers with a quantized form
    eval_device: Optional[str]                     # "cpu" for int8 models
    restores_best: bool                            # the trial keeps its best-dev epoch (False: the last one)

    @classmethod
    def check(cls, params: BaseModel, task, has_source: bool) -> None:
        """Config rules beyond the Params schema; raise ValueError naming the field."""

    @classmethod
    def check_prepared(cls, params: BaseModel, train, n_train: int, pretrained: bool) -> None:
        """Rules that need the data size (a prune schedule's steps), checked on the driver before Ray starts."""

    @classmethod
    def check_source(cls, params: BaseModel, source_model: str, depth: Callable[[str], Optional[int]]) -> None:
        """Rules on the source stage's model (``depth(name)``: its layer count), checked on the driver before Ray
        starts; raise ValueError naming the param."""

    @classmethod
    def check_machine(cls, params: BaseModel, device: str, gpus: float, local: bool) -> None:
        """Rules on the hardware a trial runs on (``train.device``, ``resources.gpu``; ``local``: this machine is the
        cluster, so its GPUs can be asked), checked on the driver before Ray starts; raise ValueError naming the field."""

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

    def state_dict(self) -> dict[str, Any]:
        """What the hooks changed during training: tensors and JSON-able values."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` after ``prepare`` (a resumed trial)."""


class NoOp:
    """Default declarations and hook bodies, so a technique only writes what it needs."""

    name: ClassVar[str] = "noop"
    Params: ClassVar[type[BaseModel]] = NoParams
    post_training: ClassVar[bool] = False
    needs_source: ClassVar[Optional[str]] = None
    source_technique: ClassVar[tuple[str, ...]] = ()
    pretraining_stage: ClassVar[bool] = False
    needs_family: ClassVar[bool] = False
    needs_hidden_states: ClassVar[bool] = False
    acts_on_linear: ClassVar[bool] = False
    replaces_linear: ClassVar[bool] = False
    eval_device: ClassVar[Optional[str]] = None
    restores_best: ClassVar[bool] = True

    def __init__(self, ctx: TechniqueContext | None = None):
        self.ctx = ctx
        self.p = ctx.params if ctx is not None else self.Params()

    @classmethod
    def check(cls, params, task, has_source: bool) -> None:
        return None

    @classmethod
    def check_prepared(cls, params, train, n_train: int, pretrained: bool) -> None:
        return None

    @classmethod
    def check_source(cls, params, source_model: str, depth) -> None:
        return None

    @classmethod
    def check_machine(cls, params, device: str, gpus: float, local: bool) -> None:
        return None

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

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
