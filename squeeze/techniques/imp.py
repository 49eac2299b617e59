"""Iterative magnitude pruning (Chen et al. 2020, "The Lottery Ticket Hypothesis for Pre-trained BERT Networks").

Two stages, two registry names:
- ``imp_prune`` (the pre-training task): keep pre-training on WikiText with the model's own objective
  and, every ``every`` (Y) optimizer steps, prune globally by magnitude until ``sparsity`` (X) is
  reached. Each event prunes ``step_fraction`` of the *remaining* weights (``step_of: remaining``,
  geometric: 12 events to 70%) or of the *original* weights (``step_of: original``: 10 percentage points
  per event, 7 events to 70%). The second is what Chen et al.'s released code does (``LT_pretrain.py``
  prunes ``1/(10 - k)`` of the remaining weights at event k) and how the paper, which used that code,
  describes its schedule ("10% of the weights every Y steps", X in 10..70 by 10).
- ``imp`` (a downstream task): fine-tune the pruned model with the mask fixed.

What is pruned: the Linear (and GPT-2 Conv1D) weights of the transformer layers (``squeeze.families``);
embeddings, norms, biases, the pooler and the heads are left alone (Chen et al.'s code also prunes
BERT's pooler, which MLM training never updates). Pruned weights get no gradient (so they neither
move nor count in gradient clipping) and stay exactly zero. The prune stage saves the model at the end
of its schedule, never an earlier "best" epoch, at exactly X.

Differences from Chen et al.'s code, stated: their first event comes before any training (ours at step
Y); their rewind resets every encoder weight and the optimizer to the pre-trained state after each
event, ours (``rewind: true``) resets the surviving prunable weights to their pre-trained values once,
at the end (the lottery ticket "pre-trained weights under the final mask").

A pre-trained checkpoint without its LM head (the packaged MiniLM has none) would have the encoder
pruned while a random head learns; the prune stage therefore first fits only the weights the
checkpoint lacked, for ``head_warmup_steps``, the rest frozen, and starts the schedule after that.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from squeeze import families
from squeeze.techniques.base import NoOp


class PruneParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    sparsity: float = Field(0.7, gt=0, lt=1, description="target X over the prunable weights")
    every: int = Field(100, gt=0, description="Y: optimizer steps between prune events")
    step_fraction: float = Field(0.1, gt=0, lt=1, description="share pruned per event (of `step_of`)")
    step_of: Literal["remaining", "original"] = Field("remaining", description="remaining: geometric; original: "
                                                      "percentage points of all prunable weights (Chen et al.'s code)")
    rewind: bool = Field(False, description="at the end, reset the survivors to their pre-trained values")
    head_warmup_steps: int = Field(100, ge=0, description="steps fitting only the weights a pre-trained checkpoint "
                                                          "lacked (its LM head), before the first prune event")
    allow_forced_final: bool = Field(False, description="accept a schedule that needs more steps than training "
                                                        "runs: one forced prune to X at the end, flagged")


prunable = families.prunable  # Linear/Conv1D weights inside the transformer layers, per family


def sparsity(weights: dict[str, torch.Tensor]) -> float:
    total = sum(w.numel() for w in weights.values())
    return sum(int((w == 0).sum()) for w in weights.values()) / max(total, 1)


def schedule_events(target: float, fraction: float, step_of: str = "remaining") -> int:
    """Prune events needed to reach ``target`` (the last one may prune less than a full step)."""
    if step_of == "original":
        return math.ceil(target / fraction - 1e-9)
    return math.ceil(math.log(1 - target) / math.log(1 - fraction) - 1e-9)


def steps_needed(p: PruneParams, warmup: int = 0) -> int:
    """Optimizer steps the schedule needs: the head warm-up, then one event every Y steps."""
    return warmup + schedule_events(p.sparsity, p.step_fraction, p.step_of) * p.every


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
            w.masked_fill_(~masks[k], 0.0)  # +0.0 (a multiplication would leave -0.0, stored as a value)
    return weights


def _pack(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.detach().to("cpu").numpy().ravel()))


def _unpack(bits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    flat = np.unpackbits(bits.numpy(), count=like.numel()).astype(bool)
    return torch.from_numpy(flat).reshape(like.shape).to(like.device)


class _Masked(NoOp):
    def _mask(self, name: str, device) -> torch.Tensor:
        if self.masks[name].device != device:
            self.masks[name] = self.masks[name].to(device)
        return self.masks[name]

    def _track(self, model) -> None:
        """Masked weights get a zero gradient: they do not move and do not count in gradient clipping."""
        self.handles = [w.register_hook(lambda g, k=k: g * self._mask(k, g.device)) for k, w in self.weights.items()]

    def _apply(self) -> None:
        with torch.no_grad():
            for name, w in self.weights.items():
                w.masked_fill_(~self._mask(name, w.device), 0.0)  # +0.0: a product would leave -0.0 behind

    def _untrack(self) -> None:
        for h in getattr(self, "handles", []):
            h.remove()
        self.handles = []


class ImpPrune(_Masked):
    name = "imp_prune"
    needs_family = True
    Params = PruneParams
    pretraining_stage = True
    restores_best = False  # the model at the end of the schedule (exactly X), never an earlier epoch's

    @classmethod
    def check_prepared(cls, params: PruneParams, train, n_train: int, pretrained: bool) -> None:
        """Refuse a schedule that cannot complete in the steps training runs (before any trial starts)."""
        if params.allow_forced_final:
            return
        per_epoch = math.ceil(n_train / train.batch_size)
        total = per_epoch * train.epochs if not train.max_steps else min(per_epoch * train.epochs, train.max_steps)
        warmup = params.head_warmup_steps if pretrained else 0
        need = steps_needed(params, warmup)
        if need > total:
            events = schedule_events(params.sparsity, params.step_fraction, params.step_of)
            raise ValueError(
                f"IMP schedule X={params.sparsity:g}, Y={params.every} ({params.step_fraction:g} of the {params.step_of} "
                f"weights per event) needs {events} events x {params.every} steps{f' + {warmup} head warm-up' if warmup else ''}"
                f" = {need} steps, but training runs {total} ({per_epoch} steps per epoch x {train.epochs} epochs"
                f"{f', capped by max_steps {train.max_steps}' if train.max_steps else ''}); set train.epochs to at least "
                f"{math.ceil(need / per_epoch)} (and max_steps to 0 or >= {need}), lower Y, or set "
                "params.imp_prune.allow_forced_final: true to accept one forced prune to X at the end")

    def prepare(self, model):
        self.model = model
        self.weights = prunable(model)
        self.masks = {k: torch.ones_like(w, dtype=torch.bool) for k, w in self.weights.items()}
        self.total = sum(w.numel() for w in self.weights.values())
        self.target = round(self.p.sparsity * self.total)
        self.n_pruned = 0  # kept on the host, updated at prune events: no device sync per step
        self.initial = {k: w.detach().clone() for k, w in self.weights.items()} if self.p.rewind else None
        self.events = []
        self._track(model)  # (before freezing: a hook needs a tensor that requires grad)
        fresh = set(getattr(model, "squeeze_fresh", ()))
        self.warmup = self.p.head_warmup_steps if fresh else 0
        self.frozen = [p for n, p in model.named_parameters() if n not in fresh] if self.warmup else []
        for p in self.frozen:
            p.requires_grad_(False)
        if self.ctx is not None and self.warmup:
            self.ctx.info.update({"prune/head_warmup_steps": self.warmup, "prune/head_fresh_tensors": len(fresh)})
        return model

    def _evaluate(self) -> dict:
        if self.ctx is None:
            return {}
        was = self.model.training
        scores = self.ctx.evaluate(self.model)
        self.model.train(was)  # evaluation switched dropout off; the epoch goes on training
        return scores

    def _end_warmup(self, step: int) -> None:
        for p in self.frozen:
            p.requires_grad_(True)
        self.frozen = []
        if self.ctx is not None:
            self.ctx.log_metrics({f"prune/head_warmup_{k}": v for k, v in self._evaluate().items()}, step)

    def level(self, k: int) -> int:
        """Weights pruned once the k-th scheduled event is done: the cumulative level (k x fraction of the original
        weights, or 1 - (1 - fraction)^k), rounded once, never above X. Rounding each event's own share instead
        fell short of X after the last event (7 x round(0.1 T) < round(0.7 T)) and failed a schedule with no
        steps to spare."""
        f = self.p.step_fraction
        level = k * f if self.p.step_of == "original" else 1 - (1 - f) ** k
        k_max = schedule_events(self.p.sparsity, f, self.p.step_of)
        return self.target if k >= k_max else min(round(level * self.total), self.target)

    def prune_once(self, step: int, forced: bool = False) -> None:
        k = sum(1 for e in self.events if not e["forced"]) + 1
        n = (self.target if forced else self.level(k)) - self.n_pruned
        for name, w in self.weights.items():  # masks made before the loop moved the model to the GPU follow it
            self._mask(name, w.device)
        global_magnitude_masks(self.weights, self.masks, n)
        self._apply()
        self.n_pruned = self.total - sum(int(m.sum()) for m in self.masks.values())
        metrics = {"prune/sparsity": self.n_pruned / self.total, **{f"prune/{k}": v for k, v in self._evaluate().items()}}
        if self.ctx is not None:
            self.ctx.log_metrics(metrics, step)
        self.events.append({"step": step, "forced": forced, **metrics})

    def after_step(self, step):
        if self.frozen and step >= self.warmup:
            self._end_warmup(step)
        if step > self.warmup and self.n_pruned < self.target and (step - self.warmup) % self.p.every == 0:
            self.prune_once(step)
        else:
            self._apply()

    def state_dict(self):
        """Masks (bit-packed), pruned count, events so far and whether the head warm-up is over; the rewind point
        is the pre-trained model, rebuilt by ``prepare``, so it is not stored."""
        return {"n_pruned": self.n_pruned, "events": self.events, "warmup_done": not self.frozen,
                **{f"mask.{k}": _pack(m) for k, m in self.masks.items()}}

    def load_state_dict(self, state):
        self.n_pruned, self.events = int(state["n_pruned"]), list(state["events"])
        self.masks = {k: _unpack(state[f"mask.{k}"], w) for k, w in self.weights.items()}
        if state["warmup_done"]:
            for p in self.frozen:
                p.requires_grad_(True)
            self.frozen = []
        self._apply()

    def finalize(self, model):
        if self.n_pruned < self.target:
            if not self.p.allow_forced_final:
                raise RuntimeError(f"the IMP schedule stopped at sparsity {self.n_pruned / self.total:.4f} before "
                                   f"X={self.p.sparsity:g}; give it more steps or set allow_forced_final: true")
            self.prune_once(-1, forced=True)  # too few steps for the schedule: reach X at the end, flagged
        self._apply()
        if self.initial is not None:
            with torch.no_grad():
                for k, w in self.weights.items():
                    w.copy_(self.initial[k].to(w.device)).masked_fill_(~self._mask(k, w.device), 0.0)
        self._untrack()
        zeros = sum(int((w == 0).sum()) for w in self.weights.values())
        if zeros < self.target or self.n_pruned != self.target:
            raise AssertionError(f"pruned model has {zeros} zero weights, the target X={self.p.sparsity:g} is {self.target}")
        if self.ctx is not None:
            self.ctx.info.update({"prune/events": len(self.events), "prune/final_sparsity": self.n_pruned / self.total,
                                  "prune/forced": int(any(e["forced"] for e in self.events))})
        return model


class Imp(_Masked):
    """Fine-tune with the mask of the pruned model fixed (zeros are the mask, read from the source model)."""

    name = "imp"
    needs_family = True
    needs_source = "the imp_prune sweep whose pruned models it fine-tunes (or an imp sweep, for dq+imp)"
    source_technique = ("imp_prune", "imp")

    def prepare(self, model):
        self.weights = prunable(model)
        self.masks = {k: w.detach() != 0 for k, w in self.weights.items()}
        self.start_zeros = sum(int((~m).sum()) for m in self.masks.values())
        self._track(model)
        return model

    def after_step(self, step):
        self._apply()

    def finalize(self, model):
        self._untrack()
        zeros = sum(int((w == 0).sum()) for w in self.weights.values())
        if zeros != self.start_zeros:
            raise AssertionError(f"zero weights changed during fine-tuning: {self.start_zeros} -> {zeros}")
        if self.ctx is not None:
            self.ctx.info["imp/sparsity"] = sparsity(self.weights)
        return model

