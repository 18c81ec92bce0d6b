"""Column-row sampling of a GEMM's reduction dimension (Adelman, Levy, Hakimi, Silberstein, NeurIPS 2021).

``A (M x K) @ B (K x N) = sum_i A[:, i] B[i, :]``; keeping a subset ``S`` of the ``K`` column-row pairs, each
scaled by ``w_i``, gives the estimate ``sum_{i in S} w_i A[:, i] B[i, :]`` — a GEMM of inner dimension ``|S|``.
Pairs are chosen by a score ``s_i = ||A[:, i]|| * ||B[i, :]||`` (for a convolution a "pair" is a group of
``kh*kw`` im2col columns, one input channel; for a batch it is the ``P`` rows of one example).

Samplers (``k = min(max(floor(ratio * C), min_k), C)`` of ``C`` groups):

``topk``
    The ``k`` largest scores, weight 1 (biased, lowest variance in practice).
``crs``
    ``k`` i.i.d. draws with replacement from ``p = 0.9 * s / sum(s) + 0.1 / C``, each draw weighted
    ``1 / (k p_i)``; a group drawn ``c`` times is sent once with weight ``c / (k p_i)`` (the same estimator,
    a smaller GEMM). Unbiased; per output entry ``Var = (sum_i x_i^2 / p_i - (sum_i x_i)^2) / k`` with
    ``x_i = A[m, i] B[i, n]``.
``bernoulli``
    Group ``i`` kept independently with ``p_i = 0.9 * clamp(k s_i / sum(s), 0, 1) + 0.1 / C``, weight
    ``1 / p_i``. Unbiased; ``Var = sum_i (1 - p_i) / p_i * x_i^2``. If nothing is kept the estimate is 0 and
    no GEMM is sent.

All scores zero (an all-zero operand): uniform probabilities. Randomness comes from one ``torch.Generator``.

Members
-------
SAMPLERS : tuple of str
sample_count
    ``k`` for ``C`` groups.
choose
    ``(indices, weights)`` of the kept groups (``weights`` None for ``topk``).
expand
    Group indices and weights to column (or row) indices and weights.
group_norms
    Euclidean norm of each group of consecutive columns of a matrix.
estimate
    The float estimator ``A[:, S] diag(w) B[S, :]`` (used by tests and by nothing on the GEMM path).
"""

from __future__ import annotations

import math

import torch

__all__ = ["SAMPLERS", "sample_count", "choose", "expand", "group_norms", "estimate"]

SAMPLERS = ("topk", "crs", "bernoulli")
UNIFORM_MIX = 0.1  # the reference code's mixture with the uniform distribution


def sample_count(groups: int, ratio: float, min_k: int) -> int:
    """``min(max(floor(ratio * groups), min_k), groups)``."""
    return min(max(math.floor(ratio * groups), min_k), groups)


def choose(scores: torch.Tensor, k: int, sampler: str, generator: torch.Generator):
    """Indices (ascending, int64) of the groups kept and their weights (float64 tensor, or None for ``topk``).

    ``scores``: non-negative, one per group. Bernoulli may return no index (then weights is empty too).
    """
    scores = scores.to(torch.float64)
    c = scores.numel()
    if sampler == "topk":
        return torch.sort(torch.topk(scores, k, sorted=False).indices).values, None
    total = float(scores.sum())
    share = scores / total if total > 0 else torch.full_like(scores, 1.0 / c)
    if sampler == "crs":
        p = (1 - UNIFORM_MIX) * share + UNIFORM_MIX / c
        draws = torch.multinomial(p, k, replacement=True, generator=generator)
        idx, counts = torch.unique(draws, sorted=True, return_counts=True)
        return idx, counts.to(torch.float64) / (k * p[idx])
    if sampler == "bernoulli":
        p = (1 - UNIFORM_MIX) * torch.clamp(k * share, 0, 1) + UNIFORM_MIX / c
        keep = torch.rand(c, generator=generator, dtype=torch.float64) < p
        idx = torch.nonzero(keep).flatten()
        return idx, 1.0 / p[idx]
    raise ValueError(f"Unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")


def expand(idx: torch.Tensor, weights, group: int):
    """Group indices to the ``group`` consecutive column indices each stands for (and weights repeated)."""
    if group == 1:
        return idx, weights
    cols = (idx[:, None] * group + torch.arange(group)).flatten()
    return cols, None if weights is None else weights.repeat_interleave(group)


def group_norms(x: torch.Tensor, group: int, dim: int) -> torch.Tensor:
    """Norms of the consecutive groups of ``group`` slices of ``x`` along ``dim`` (0: rows, 1: columns)."""
    sq = x.to(torch.float64).square()
    sq = sq.sum(1 - dim)
    return sq.reshape(-1, group).sum(1).sqrt()


def estimate(a: torch.Tensor, b: torch.Tensor, ratio: float, sampler: str, generator, min_k: int = 1,
             group: int = 1) -> torch.Tensor:
    """Float estimate of ``a @ b`` keeping sampled column-row groups of ``a``'s columns / ``b``'s rows."""
    scores = group_norms(a, group, 1) * group_norms(b, group, 0)
    idx, w = choose(scores, sample_count(scores.numel(), ratio, min_k), sampler, generator)
    cols, w = expand(idx, w, group)
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    if cols.numel() == 0:
        return torch.zeros(a.shape[0], b.shape[1], dtype=torch.float64)
    left = a64[:, cols] if w is None else a64[:, cols] * w
    return left @ b64[cols]
