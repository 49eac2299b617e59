"""The integer grid every weight-only method here shares: GPTQ's quantizer (IST-DASLab/gptq, ``quant.py``).

Per group of input columns (per row, ``x`` of shape [rows, cols]): the range is widened to include 0; asymmetric:
``scale = (max - min) / maxq``, ``zero = round(-min / scale)``; symmetric: ``max = max(|min|, max)``,
``min = -max``, ``zero = (maxq + 1) / 2``; an all-zero group gets the range [-1, 1]. A weight is
``q = clamp(round(w / scale) + zero, 0, maxq)`` and reads back as ``scale * (q - zero)``. So RTN, GPTQ and AWQ differ
only in how they choose the weights to round, never in the grid, and every result is stored as (q, scale, zero).
"""

from __future__ import annotations

import torch


def find_params(x: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per row of ``x`` ([rows, 1] each), GPTQ's ``find_params(weight=True)``."""
    maxq = 2 ** bits - 1
    zero_t = torch.zeros(x.shape[0], device=x.device)
    xmin = torch.minimum(x.min(1).values, zero_t)
    xmax = torch.maximum(x.max(1).values, zero_t)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin, xmax = torch.where(empty, -1.0, xmin), torch.where(empty, 1.0, xmax)
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def to_int(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale) + zero, 0, 2 ** bits - 1)


def from_int(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return scale * (q - zero)


def group_params(w: torch.Tensor, bits: int, group: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and zeros [rows, groups] of contiguous groups of ``group`` columns (``group`` <= 0: one per row)."""
    g = group if group > 0 else w.shape[1]
    pairs = [find_params(w[:, i:i + g], bits, sym) for i in range(0, w.shape[1], g)]
    return torch.cat([p[0] for p in pairs], 1), torch.cat([p[1] for p in pairs], 1)


def expand(t: torch.Tensor, group: int, cols: int) -> torch.Tensor:
    """Per-group values [rows, groups] -> per-column [rows, cols]."""
    g = group if group > 0 else cols
    return t.repeat_interleave(g, dim=1)[:, :cols]


def rtn(w: torch.Tensor, bits: int, group: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round to nearest on the grid: integers [rows, cols], scales and zeros [rows, groups]."""
    scales, zeros = group_params(w, bits, group, sym)
    q = to_int(w, expand(scales, group, w.shape[1]), expand(zeros, group, w.shape[1]), bits)
    return q, scales, zeros
