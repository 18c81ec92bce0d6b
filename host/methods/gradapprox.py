"""Weight-gradient approximation of selected convolutions (Wang, Nelaturu, Amarasinghe, EMC^2 2019).

The forward pass and the input gradient stay exact; only ``dW`` of a selected convolution at a selected step is
replaced. With the layer's im2col operand ``A`` (``B*P x K``, rows in (example, position) order) and its output
gradient ``dY`` (``B*P x N``, on the gradient grid):

``zero``
    ``dW = 0``; no GEMM is sent.
``random``
    Every element of ``dW`` drawn from ``N(0, (1/B)^2)``, ``B`` the batch size, fresh each step (from the
    methods' generator); no GEMM is sent.
``top1``
    Per example ``b`` and output channel ``n`` only the position ``p*`` of largest ``|dY[b, p, n]|`` is kept
    (the first on ties), with the value ``sum_p dY[b, p, n]`` (the channel's sum is kept; saturated to the
    gradient format). ``dW = A[R]^T @ dY_sparse[R]`` over the ``|R| <= B * min(P, N)`` distinct rows
    ``(b, p*)`` that hold a kept value: the GEMM sent has inner dimension ``|R|`` instead of ``B*P``.

Schedules (``i`` counts the model's convolutions from 0 in call order; the first, ``i = 0``, is never chosen;
``t`` is the global training step from 0):

``every4``  ``i = 1, 5, 9, ...`` (every 4th layer from the 2nd), every step;
``alternate``  ``i = 1, 3, 5, ...`` (every other layer), on even steps ``t``;
``all4``  every layer ``i >= 1``, on steps with ``t % 4 == 0``.

Members
-------
MODES, SCHEDULES : tuple of str
selected
    Whether conv ``i`` is approximated at step ``t``.
top1_rows
    The rows and sparse values of ``top1``.
"""

from __future__ import annotations

import torch

__all__ = ["MODES", "SCHEDULES", "selected", "top1_rows"]

MODES = ("zero", "random", "top1")
SCHEDULES = ("every4", "alternate", "all4")


def selected(schedule: str, conv_index: int, step: int) -> bool:
    """Whether the ``conv_index``-th convolution's weight gradient is approximated at global step ``step``."""
    if conv_index < 1:
        return False
    if schedule == "every4":
        return (conv_index - 1) % 4 == 0
    if schedule == "alternate":
        return conv_index % 2 == 1 and step % 2 == 0
    if schedule == "all4":
        return step % 4 == 0
    raise ValueError(f"Unknown gradient-approximation schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def top1_rows(g_raw: torch.Tensor, positions: int, fmt):
    """``(rows, values)`` of the sparse ``dY`` of ``top1``: ``rows`` (ascending, int64) index ``g_raw``'s rows;
    ``values`` (``len(rows) x N``, raw, saturated to ``fmt``) hold each kept channel sum at its row, 0 elsewhere.

    ``g_raw`` is ``B*P x N`` raw gradients with rows in (example, position) order.
    """
    bp, n = g_raw.shape
    batch = bp // positions
    g = g_raw.reshape(batch, positions, n)
    arg = g.abs().argmax(dim=1)                                  # B x N: first position of largest |dY|
    sums = g.sum(dim=1).clamp_(fmt.min_raw, fmt.max_raw)         # B x N channel sums (exact: raw integers)
    flat_rows = torch.arange(batch)[:, None] * positions + arg    # B x N row index of each kept value
    rows, inverse = torch.unique(flat_rows.flatten(), sorted=True, return_inverse=True)
    values = torch.zeros(rows.numel(), n, dtype=g_raw.dtype)
    values[inverse, torch.arange(n).repeat(batch)] = sums.flatten().to(g_raw.dtype)
    return rows, values
