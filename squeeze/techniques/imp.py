"""Iterative magnitude pruning (Chen et al. 2020, "The Lottery Ticket Hypothesis for BERT").

Two stages, two registry names:
- ``imp_prune`` (task ``lm``): keep pre-training on WikiText with the model's own objective and,
  every ``every`` (Y) optimizer steps, prune ``step_fraction`` of the remaining weights, globally
  by magnitude, until ``sparsity`` (X) is reached; optional rewind of the survivors.
- ``imp`` (a downstream task): fine-tune the pruned model with the mask fixed; pruned weights
  stay exactly zero.
What is pruned: the Linear (and GPT-2 Conv1D) weights of the transformer layers; embeddings,
LayerNorm and biases are left alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from squeeze import families
from squeeze.techniques.base import NoOp


class PruneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sparsity: float = Field(0.7, gt=0, lt=1, description="target X over the prunable weights")
    every: int = Field(100, gt=0, description="Y: optimizer steps between prune events")
    step_fraction: float = Field(0.1, gt=0, lt=1, description="share of the remaining weights pruned per event")
    rewind: bool = False


prunable = families.prunable  # Linear/Conv1D weights inside the transformer layers, per family


def sparsity(weights: dict[str, torch.Tensor]) -> float:
    total = sum(w.numel() for w in weights.values())
    return sum(int((w == 0).sum()) for w in weights.values()) / max(total, 1)


def prune_events(total_steps: int, every: int, target: float, fraction: float) -> int:
    """How many prune events a schedule makes within ``total_steps`` (the last one may be forced)."""
    needed = math.ceil(math.log(1 - target) / math.log(1 - fraction) - 1e-9)
    return min(needed, total_steps // every) or 1


def global_magnitude_masks(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], n_prune: int) -> None:
    """Zero ``n_prune`` more of the surviving weights, smallest |w| first, across all tensors."""
    if n_prune <= 0:
        return
    alive = torch.cat([w.detach().abs().flatten()[m.flatten()] for w, m in zip(weights.values(), masks.values())])
    threshold = torch.kthvalue(alive.float().cpu(), n_prune).values.item()
    below = [(w.detach().abs() <= threshold) & m for w, m in zip(weights.values(), masks.values())]
    extra = sum(int(b.sum()) for b in below) - n_prune  # ties at the threshold: keep exactly n_prune
    for (name, m), b in zip(masks.items(), below):
        if extra > 0:
            at = (weights[name].detach().abs() == threshold) & b
            keep = min(extra, int(at.sum()))
            idx = at.flatten().nonzero().flatten()[:keep]
            b.view(-1)[idx] = False
            extra -= keep
        m &= ~b


def prune_to(model: torch.nn.Module, target: float) -> dict[str, torch.nn.Parameter]:
    """One-shot global magnitude pruning of the prunable weights to ``target`` sparsity (in place)."""
    weights = prunable(model)
    masks = {k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()}
    global_magnitude_masks(weights, masks, round(target * sum(w.numel() for w in weights.values())))
    with torch.no_grad():
        for k, w in weights.items():
            w.mul_(masks[k])
    return weights


class _Masked(NoOp):
    def _apply(self) -> None:
        with torch.no_grad():
            for name, w in self.weights.items():
                if self.masks[name].device != w.device:
                    self.masks[name] = self.masks[name].to(w.device)
                w.mul_(self.masks[name])


def _pack(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.detach().to("cpu").numpy().ravel()))


def _unpack(bits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    flat = np.unpackbits(bits.numpy(), count=like.numel()).astype(bool)
    return torch.from_numpy(flat).reshape(like.shape).to(like.device)


class ImpPrune(_Masked):
    name = "imp_prune"
    Params = PruneParams
    pretraining_stage = True

    def prepare(self, model):
        self.model = model
        self.weights = prunable(model)
        self.masks = {k: torch.ones_like(w, dtype=torch.bool) for k, w in self.weights.items()}
        self.total = sum(w.numel() for w in self.weights.values())
        self.target = round(self.p.sparsity * self.total)
        self.n_pruned = 0  # kept on the host, updated at prune events: no device sync per step
        self.initial = {k: w.detach().clone() for k, w in self.weights.items()} if self.p.rewind else None
        self.events = []
        return model

    def prune_once(self, step: int, forced: bool = False) -> None:
        remaining = self.total - self.n_pruned
        n = self.target - self.n_pruned if forced else min(round(self.p.step_fraction * remaining), self.target - self.n_pruned)
        global_magnitude_masks(self.weights, self.masks, n)
        self._apply()
        self.n_pruned = self.total - sum(int(m.sum()) for m in self.masks.values())
        s = self.n_pruned / self.total
        metrics = {"prune/sparsity": s}
        if self.ctx is not None:
            metrics.update({f"prune/{k}": v for k, v in self.ctx.evaluate(self.model).items()})
            self.ctx.log_metrics(metrics, step)
        self.events.append({"step": step, "forced": forced, **metrics})

    def after_step(self, step):
        if self.n_pruned < self.target and step % self.p.every == 0:
            self.prune_once(step)
        else:
            self._apply()

    def state_dict(self):
        """Masks (bit-packed), pruned count and the events so far; the rewind point is the pre-trained model,
        rebuilt by ``prepare``, so it is not stored."""
        return {"n_pruned": self.n_pruned, "events": self.events, **{f"mask.{k}": _pack(m) for k, m in self.masks.items()}}

    def load_state_dict(self, state):
        self.n_pruned, self.events = int(state["n_pruned"]), list(state["events"])
        self.masks = {k: _unpack(state[f"mask.{k}"], w) for k, w in self.weights.items()}
        self._apply()

    def finalize(self, model):
        if self.n_pruned < self.target:
            self.prune_once(-1, forced=True)  # too few steps for the schedule: reach X at the end, flagged
        if self.initial is not None:
            with torch.no_grad():
                for k, w in self.weights.items():
                    w.copy_(self.initial[k] * self.masks[k])
        if self.ctx is not None:
            self.ctx.info.update({"prune/events": len(self.events), "prune/final_sparsity": sparsity(self.weights),
                                  "prune/forced": int(any(e["forced"] for e in self.events))})
        return model


class Imp(_Masked):
    """Fine-tune with the mask of the pruned model fixed (zeros are the mask, read from the source model)."""

    name = "imp"
    needs_source = "the imp_prune sweep whose pruned models it fine-tunes (or an imp sweep, for dq+imp)"
    source_technique = ("imp_prune", "imp")

    def prepare(self, model):
        self.weights = prunable(model)
        self.masks = {k: w.detach() != 0 for k, w in self.weights.items()}
        self.start_sparsity = sparsity(self.weights)
        return model

    def after_step(self, step):
        self._apply()

    def finalize(self, model):
        s = sparsity(self.weights)
        if round(s, 4) != round(self.start_sparsity, 4):
            raise AssertionError(f"sparsity changed during fine-tuning: {self.start_sparsity:.4f} -> {s:.4f}")
        if self.ctx is not None:
            self.ctx.info["imp/sparsity"] = s
        return model
