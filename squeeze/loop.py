"""The one training loop: AdamW, linear warm-up and decay, clipping, technique hooks.

``Loop.fit`` is a generator that yields after every epoch with the dev metrics, so the caller
(the Ray trainable) owns reporting and checkpointing; the loop owns nothing but training.
Data order is a pure function of (seed, epoch), so a resumed trial sees the same batches.
"""

from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from squeeze import console
from squeeze.tasks.base import collate, to_device


def _progress(epoch: int, epochs: int, done: int, total: int, took: float) -> None:
    """Inside a long epoch: steps, steps/s and the epoch's ETA, posted at most every ``console.PROGRESS_EVERY_S``
    (the driver prints them as the trial's line; outside a Ray trial nothing is posted)."""
    if took < console.PROGRESS_EVERY_S or done >= total:
        return
    rate = done / max(took, 1e-9)
    console.progress(f"epoch {epoch + 1}/{epochs}: step {done}/{total} of the epoch, {rate:.2f} steps/s, "
                     f"epoch ETA {(total - done) / max(rate, 1e-9):.0f} s", every_s=console.PROGRESS_EVERY_S)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                           mega: int = 50) -> list[list[int]]:
    """Shuffle, sort by length inside mega-batches of ``mega*batch_size``, then shuffle the batches.

    Batches hold examples of similar length, so dynamic padding wastes little, while the order
    stays random from epoch to epoch (the scheme of HF ``group_by_length``).
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    out = []
    for i in range(0, len(order), mega * batch_size):
        chunk = sorted(order[i:i + mega * batch_size], key=lambda j: -lengths[j])
        out += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


@dataclass
class EpochResult:
    epoch: int
    step: int
    train_loss: float
    metrics: dict[str, float]
    is_best: bool
    padding_fraction: float
    samples_per_s: float
    train_s: float


@dataclass
class LoopState:
    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = -1
    spent: dict = field(default_factory=dict)  # training costs of earlier attempts up to this state (a resumed trial)


class Loop:
    """Fine-tune ``model`` on encoded features, calling each technique's hooks."""

    def __init__(self, model, *, hooks, train: list[dict], pad_id: int, evaluate: Callable[[torch.nn.Module], dict],
                 primary: str, mode: str, lr: float, epochs: int, batch_size: int, warmup_ratio: float,
                 weight_decay: float, max_grad_norm: float, seed: int, max_steps: int = 0, device="cpu",
                 precision: str = "fp32", compile: bool = False, num_workers: int = -1,
                 transform: Callable[[dict, torch.Generator], dict] | None = None, grad_accum: int = 1):
        self.hooks, self.train, self.pad_id, self.evaluate = list(hooks), train, pad_id, evaluate
        self.transform = transform  # per training batch, with a generator seeded per epoch (fresh MLM masks)
        self.grad_accum = grad_accum  # micro-batches per batch: the same batches, a fraction of the memory
        self.primary, self.mode, self.epochs, self.batch_size = primary, mode, epochs, batch_size
        self.max_grad_norm, self.seed, self.device = max_grad_norm, seed, torch.device(device)
        self.num_workers = (2 if self.device.type == "cuda" else 0) if num_workers < 0 else num_workers
        for hook in self.hooks:
            model = hook.prepare(model)
        self.model = model.to(self.device)
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and self.device.type == "cuda" else None
        self.forward = torch.compile(self.model) if compile else self.model
        self.lengths = [len(f["input_ids"]) for f in train]
        steps_per_epoch = math.ceil(len(train) / batch_size)
        self.total_steps = min(steps_per_epoch * epochs, max_steps or steps_per_epoch * epochs)
        # every parameter, frozen or not: a technique may freeze some for a while (IMP's head warm-up);
        # a parameter without a gradient is skipped by the optimizer
        decay = [p for p in model.parameters() if p.ndim >= 2]
        rest = [p for p in model.parameters() if p.ndim < 2]  # biases and norms: no decay
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        self.optimizer = _adamw(groups, lr, self.device)
        warmup = int(warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: _linear(s, warmup, self.total_steps))
        self.state = LoopState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.needs_hidden = any(getattr(h, "needs_hidden_states", False) for h in self.hooks)

    def _improved(self, value: float) -> bool:
        if self.state.best is None or math.isnan(self.state.best):
            return not math.isnan(value)
        return value > self.state.best if self.mode == "max" else value < self.state.best

    def _micro(self, batch, indices: list[int], weight: float) -> torch.Tensor:
        """Forward and backward one micro-batch, its loss weighted by its share of the batch's labels."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            kwargs = {"output_hidden_states": True} if self.needs_hidden else {}
            outputs = self.forward(**batch, **kwargs)
            loss = outputs.loss
            for hook in self.hooks:
                extra = hook.extra_loss(batch, outputs, indices)
                if extra is not None:
                    loss = loss + extra
        loss = loss * weight
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss.detach()

    def _split(self, batch, indices: list[int]) -> list[tuple[dict, list[int], float]]:
        """``grad_accum`` micro-batches of one batch, weighted so their losses add up to the batch's mean: by
        their share of labelled positions (tokens for token-level losses, examples for sequence labels)."""
        if self.grad_accum == 1:
            return [(batch, indices, 1.0)]
        size = -(-len(indices) // self.grad_accum)
        parts = [(i, min(i + size, len(indices))) for i in range(0, len(indices), size)]
        labels = batch["labels"]
        counts = [int((labels[a:b] != -100).sum()) for a, b in parts]
        total = max(sum(counts), 1)
        return [({k: v[a:b] for k, v in batch.items()}, indices[a:b], c / total) for (a, b), c in zip(parts, counts)]

    def _step(self, batch, indices: list[int]) -> torch.Tensor:
        loss = sum(self._micro(b, i, w) for b, i, w in self._split(batch, indices))
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        for hook in self.hooks:
            hook.after_step(self.state.step)
        return loss.detach()

    def _batches(self, epoch: int) -> torch.utils.data.DataLoader:
        """(indices, padded batch) in the epoch's length-grouped order, collated in ``num_workers`` processes
        (0: in this one), into pinned memory on CUDA so the host-to-device copies overlap compute. The loader
        has its own generator: no seed drawn from the global RNG, so dropout masks do not depend on num_workers."""
        return torch.utils.data.DataLoader(
            _Indexed(self.train), batch_sampler=length_grouped_batches(self.lengths, self.batch_size, self.seed, epoch),
            num_workers=self.num_workers, collate_fn=functools.partial(_collate_indexed, pad_id=self.pad_id),
            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(epoch))

    def train_epoch(self, epoch: int) -> tuple[float, float, int]:
        """One pass over the data; returns (mean loss, padding fraction, samples seen)."""
        self.model.train()
        torch.manual_seed(self.seed * 1_000_003 + epoch)  # dropout masks depend on (seed, epoch): exact resume
        loss_sum = torch.zeros((), device=self.device)  # accumulated on device: no host sync per step
        n_batches = padded = real = samples = 0
        draws = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        loader = self._batches(epoch)
        n_epoch, t0 = len(loader), time.perf_counter()
        for idx, batch in loader:
            if self.state.step >= self.total_steps:
                break
            if self.transform is not None:
                batch = self.transform(batch, draws)
            real += sum(self.lengths[i] for i in idx)
            padded += batch["input_ids"].numel()
            loss_sum += self._step(to_device(batch, self.device), idx)
            n_batches += 1
            samples += len(idx)
            _progress(epoch, self.epochs, n_batches, n_epoch, time.perf_counter() - t0)
        mean = float(loss_sum) / max(n_batches, 1)
        if not math.isfinite(mean):
            raise FloatingPointError(f"training loss became {mean} in epoch {epoch} (step {self.state.step}); "
                                     "lower the learning rate or check the data")
        return mean, 1 - real / max(padded, 1), samples

    def fit(self) -> Iterator[EpochResult]:
        """Train from ``state.epoch`` to ``epochs``, yielding after each epoch's dev evaluation."""
        while self.state.epoch < self.epochs and self.state.step < self.total_steps:
            epoch = self.state.epoch
            t0 = time.perf_counter()
            loss, pad, samples = self.train_epoch(epoch)
            train_s = time.perf_counter() - t0
            scores = self.evaluate(self.model)
            best = self._improved(scores[self.primary])
            if best:
                self.state.best, self.state.best_epoch = scores[self.primary], epoch
                self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self.state.epoch = epoch + 1
            yield EpochResult(epoch, self.state.step, loss, scores, best, pad, samples / max(train_s, 1e-9), train_s)

    def load_best(self) -> torch.nn.Module:
        """Put the best-dev weights back in the model (before test evaluation)."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        return self.model

    def finalize(self) -> torch.nn.Module:
        for hook in self.hooks:
            self.model = hook.finalize(self.model)
        return self.model


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, features):
        self.features = features

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return i, self.features[i]


def _collate_indexed(items, pad_id: int):
    return [i for i, _ in items], collate([f for _, f in items], pad_id)


def _adamw(groups: list[dict], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one for the device (4x faster steps than foreach on CPU,
    as HF Trainer's default ``adamw_torch_fused``), else the foreach implementation."""
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, ValueError):  # a dtype or device the fused kernel does not take
            pass
    return torch.optim.AdamW(groups, lr=lr)


def _linear(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))
