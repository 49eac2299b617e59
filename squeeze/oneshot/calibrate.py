"""Calibration: examples from the source's train split, and the block-by-block walk the reference codes use.

The inputs of the first transformer layer are captured once (a pre-hook stops the forward there); then, layer by
layer, the layer runs on every captured input while hooks gather its Linear layers' input statistics, the layers are
compressed, and the compressed layer's outputs become the next layer's inputs, so each layer is calibrated on what the
already compressed layers before it produce. Examples run one at a time (no padding enters the statistics).
"""

from __future__ import annotations

import random
from typing import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from squeeze import families


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    examples: int = Field(128, ge=1, le=100_000, description="train examples drawn for calibration")
    max_length: int = Field(512, ge=2, le=1_000_000, description="tokens kept of each (at most the sweep's max_length)")
    seed: int = Field(0, ge=0, le=2**32 - 1)


def examples(features: list[dict], cal: Calibration) -> list[dict]:
    """``cal.examples`` train features drawn with ``cal.seed`` (all of them when there are fewer), truncated."""
    rows = list(range(len(features)))
    picked = rows if len(rows) <= cal.examples else sorted(random.Random(cal.seed).sample(rows, cal.examples))
    return [{k: (v[:cal.max_length] if isinstance(v, list) else v) for k, v in features[i].items()} for i in picked]


class InputStats:
    """Running statistics of a Linear layer's inputs: ``X^T X`` (GPTQ's H up to its 2/n), sum of x^2 (Wanda), mean
    and max |x| per channel (AWQ, SmoothQuant) and a sample of rows (AWQ)."""

    def __init__(self, cols: int, xtx: bool = True, keep_rows: int = 0, seed: int = 0):
        self.xtx = torch.zeros(cols, cols) if xtx else None
        self.abs_sum, self.sq_sum, self.abs_max = torch.zeros(cols), torch.zeros(cols), torch.zeros(cols)
        self.tokens, self.keep_rows, self.rows = 0, keep_rows, []
        self.gen = torch.Generator().manual_seed(seed)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float().cpu()
        if self.xtx is not None:
            self.xtx += x.T @ x
        self.abs_sum += x.abs().sum(0)
        self.sq_sum += (x * x).sum(0)
        self.abs_max = torch.maximum(self.abs_max, x.abs().amax(0))
        self.tokens += x.shape[0]
        if self.keep_rows:
            self.rows.append(x[torch.randperm(x.shape[0], generator=self.gen)[:self.keep_rows]])

    def hessian(self) -> torch.Tensor:
        return 2 * self.xtx / max(self.tokens, 1)

    def sample(self) -> torch.Tensor:
        rows = torch.cat(self.rows)
        return rows[torch.randperm(rows.shape[0], generator=self.gen)[:self.keep_rows]]


class _Stop(Exception):
    pass


def _without_cache(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A decoder hands its layers a key/value cache that each call appends to: replayed, a layer would attend to the
    keys of its earlier replays. The captured call is made cache-free (``use_cache`` off, the cache dropped)."""
    from transformers.cache_utils import Cache

    def drop(v):
        return None if isinstance(v, Cache) else v

    kwargs = {k: drop(v) for k, v in kwargs.items()}
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return tuple(drop(a) for a in args), kwargs


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


def layer_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in layer.named_modules() if type(m) is nn.Linear}


def walk(model: nn.Module, batches: list[dict], process: Callable[[int, nn.Module, dict], None],
         stats: Callable[[str, nn.Linear], InputStats]) -> None:
    """Run ``process(index, layer, {name: (linear, InputStats)})`` on each transformer layer in order (see the module
    docstring). The model must hold ``nn.Linear`` layers (GPT-2's Conv1D converted first)."""
    layers = families.layer_list(model)
    captured = []

    def catch(module, args, kwargs):
        captured.append(_without_cache(args, kwargs))
        raise _Stop

    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for batch in batches:
                try:
                    model(**batch)
                except _Stop:
                    pass
    finally:
        handle.remove()
    for index, layer in enumerate(layers):
        found = {name: (lin, stats(name, lin)) for name, lin in layer_linears(layer).items()}
        hooks = [lin.register_forward_hook(lambda m, inp, out, s=s: s.add(inp[0])) for lin, s in found.values()]
        try:
            with torch.no_grad():
                for args, kwargs in captured:
                    layer(*args, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        process(index, layer, found)
        nxt = []
        with torch.no_grad():
            for args, kwargs in captured:
                hidden = _hidden(layer(*args, **kwargs))
                if args:
                    nxt.append(((hidden,) + tuple(args[1:]), kwargs))
                else:
                    nxt.append((args, {**kwargs, "hidden_states": hidden}))
        captured = nxt
