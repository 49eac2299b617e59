"""Per-layer one-shot algorithms on a weight ``W`` [out, in] and statistics of its calibration inputs.

Conventions follow the authors' code, checked line by line:
- GPTQ (Frantar et al. 2023; IST-DASLab/gptq ``gptq.py``): ``H = 2/n X^T X``, dead inputs (zero diagonal) get
  ``H_jj = 1`` and zero weights, damping ``percdamp * mean(diag H)``, the upper Cholesky factor of ``H^-1``, columns
  quantized in blocks of 128 with the error ``(w - q) / Hinv_jj`` spread over the columns not yet quantized; a group's
  grid is found when its first column comes, on the weights as updated by earlier blocks; with act-order, columns go
  by decreasing ``H_jj`` and the groups are the static contiguous ones (the reference's ``--static-groups``), so the
  stored groups stay contiguous.
- SparseGPT (Frantar & Alistarh 2023; IST-DASLab/sparsegpt ``sparsegpt.py``): the same solver, pruning the weights
  with the smallest ``w^2 / Hinv_jj^2`` per block of 128 columns (N:M: in each M consecutive columns, per row) and
  compensating. One change: the reference keeps ``<= `` the k-th smallest, one weight more than X per block; here
  exactly ``int(X * block size)`` are pruned, so the sparsity is X.
- Wanda (Sun et al. 2024; locuslab/wanda ``lib/prune.py``): score ``|W_ij| * ||X_j||_2``, the lowest
  ``int(X * in)`` per output row (a stable sort), or N of each M consecutive inputs per row; no update.
- Magnitude (the baseline in both papers, ``prune_magnitude``): ``|W|`` over the whole layer (exactly
  ``int(X * numel)`` weights), or N:M per row.
- AWQ (Lin et al. 2024; mit-han-lab/llm-awq ``auto_scale.py``): per input channel ``s = mean|x|^a`` normalised by
  ``sqrt(max s * min s)``, ``a`` from a grid of 20 in [0, 1), the weight quantized as ``Q(W s)`` and the input divided
  by ``s``; ``a`` minimises the layer's output error on the calibration inputs. (The reference scores a group of
  layers by its block's output and folds ``s`` into the previous operator where it can; here each layer keeps ``s``
  as its input scale, which serves any architecture, and scores its own output. Its clipping search is not run.)
- SmoothQuant (Xiao et al. 2023; mit-han-lab/smoothquant ``smooth.py``): ``s_j = max|X_j|^a / max_i|W_ij|^(1-a)``,
  both maxima clamped at 1e-5, ``W * s`` and the input divided by ``s``: the fp32 output is unchanged and the
  activation outliers move into the weights. (The reference shares one ``s`` across the layers a LayerNorm feeds and
  folds it into that LayerNorm; here each layer keeps its own ``s`` as an input scale.)
"""

from __future__ import annotations

import torch

from squeeze.oneshot import grid


def _inverse_factor(H: torch.Tensor, W: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Dead inputs handled in place (H_jj = 1, W[:, j] = 0); returns the upper Cholesky factor of the damped H^-1."""
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    idx = torch.arange(H.shape[0])
    H[idx, idx] += percdamp * torch.mean(torch.diag(H))
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    return torch.linalg.cholesky(H, upper=True)


def gptq(W: torch.Tensor, H: torch.Tensor, *, bits: int, group: int, sym: bool, percdamp: float = 0.01,
         act_order: bool = False, blocksize: int = 128, pruned: torch.Tensor | None = None):
    """GPTQ of one layer. ``pruned`` (bool, like ``W``): weights held at zero (a SparseGPT mask: the joint
    sparse + quantized solve of the SparseGPT paper).

    Returns:
        integers [out, in], scales and zeros [out, groups], and the dequantized weight.
    """
    W, H = W.detach().clone().float(), H.clone().float()
    rows, cols = W.shape
    g = group if group > 0 else cols
    Hinv = _inverse_factor(H, W, percdamp)  # before static groups: dead columns are zero, as in the reference
    static = act_order or group <= 0
    if static:
        scales, zeros = grid.group_params(W, bits, g, sym)
    else:
        n_groups = -(-cols // g)
        scales, zeros = torch.ones(rows, n_groups), torch.zeros(rows, n_groups)
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols)
    if act_order:  # the factor is recomputed on the permuted H (damping is permutation-invariant)
        W, H = W[:, perm], H[perm][:, perm]
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
        pruned = None if pruned is None else pruned[:, perm]
    Qint, Q = torch.zeros_like(W), torch.zeros_like(W)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros(rows, i2 - i1), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            grp = int(perm[col]) // g
            if not static and col % g == 0:
                s, z = grid.find_params(W[:, col:col + g], bits, sym)
                scales[:, grp], zeros[:, grp] = s[:, 0], z[:, 0]
            w, d = W1[:, i], Hinv1[i, i]
            qi = grid.to_int(w, scales[:, grp], zeros[:, grp], bits)
            if pruned is not None:
                qi = torch.where(pruned[:, col], zeros[:, grp], qi)
            q = grid.from_int(qi, scales[:, grp], zeros[:, grp])
            Qint[:, col], Q[:, col] = qi, q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if act_order:
        inv = torch.argsort(perm)
        Qint, Q = Qint[:, inv], Q[:, inv]
    return Qint, scales, zeros, Q


def sparsegpt(W: torch.Tensor, H: torch.Tensor, *, sparsity: float = 0.0, n: int = 0, m: int = 0,
              percdamp: float = 0.01, blocksize: int = 128) -> torch.Tensor:
    """SparseGPT of one layer: the pruned and compensated weight (exact zeros where pruned)."""
    W, H = W.detach().clone().float(), H.clone().float()
    rows, cols = W.shape
    Hinv = _inverse_factor(H, W, percdamp)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros(rows, i2 - i1), Hinv[i1:i2, i1:i2]
        Q1 = torch.zeros_like(W1)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if n == 0:
            score = W1 ** 2 / torch.diag(Hinv1).reshape(1, -1) ** 2
            k = int(score.numel() * sparsity)
            if k:
                mask1.view(-1)[torch.topk(score.flatten(), k, largest=False).indices] = True
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if n and i % m == 0:
                score = W1[:, i:i + m] ** 2 / torch.diag(Hinv1)[i:i + m].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(score, n, dim=1, largest=False).indices, True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def lowest(score: torch.Tensor, *, sparsity: float = 0.0, n: int = 0, m: int = 0, per_row: bool) -> torch.Tensor:
    """The mask (True: prune) of the lowest scores: N of each M consecutive inputs per row, else exactly
    ``int(X * in)`` per row (``per_row``) or ``int(X * numel)`` over the layer."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    rows, cols = score.shape
    if n:
        idx = torch.topk(score.reshape(rows, cols // m, m), n, dim=2, largest=False).indices
        return mask.reshape(rows, cols // m, m).scatter_(2, idx, True).reshape(rows, cols)
    if per_row:
        k = int(cols * sparsity)
        return mask.scatter_(1, torch.sort(score, dim=1, stable=True).indices[:, :k], True)
    k = int(score.numel() * sparsity)
    if k:
        mask.view(-1)[torch.topk(score.flatten(), k, largest=False).indices] = True
    return mask


def wanda(W: torch.Tensor, col_sq: torch.Tensor, **pattern) -> torch.Tensor:
    """Wanda: the weight with ``|W| * ||X_j||`` lowest per row (or N:M) set to zero; ``col_sq``: sum of x_j^2."""
    W = W.detach().clone().float()
    W[lowest(W.abs() * col_sq.sqrt().reshape(1, -1), per_row=True, **pattern)] = 0
    return W


def magnitude(W: torch.Tensor, **pattern) -> torch.Tensor:
    """One-shot magnitude pruning of a layer (N:M per row)."""
    W = W.detach().clone().float()
    W[lowest(W.abs(), per_row=False, **pattern)] = 0
    return W


def awq(W: torch.Tensor, x_absmean: torch.Tensor, X: torch.Tensor, *, bits: int, group: int, sym: bool,
        n_grid: int = 20):
    """AWQ's scale search for one layer.

    Returns:
        integers, scales, zeros, the input scale ``s`` and the chosen exponent ``a`` (0 is plain RTN).
    """
    W, X = W.detach().float(), X.float()
    want = X @ W.T
    best = None
    for r in range(n_grid):
        a = r / n_grid
        s = x_absmean.float().pow(a).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        q, scales, zeros = grid.rtn(W * s, bits, group, sym)
        Wq = grid.from_int(q, grid.expand(scales, group, W.shape[1]), grid.expand(zeros, group, W.shape[1]))
        err = float(((X / s) @ Wq.T - want).pow(2).mean())
        if best is None or err < best[0]:
            best = (err, q, scales, zeros, s, a)
    return best[1:]


def smooth_scales(x_absmax: torch.Tensor, W: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel migration scale."""
    w_max = W.detach().abs().amax(0).float().clamp(min=1e-5)
    return (x_absmax.float().clamp(min=1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)
