"""`softmax_last`: softmax over a short last axis, fast on a CPU (ours)."""

from __future__ import annotations

import torch


def softmax_last(logits: torch.Tensor) -> torch.Tensor:
    """`logits.softmax(-1)` (same values up to float rounding, same gradients).

    PyTorch 2.13's CPU softmax along a last axis shorter than 16 runs 3-9x slower than
    along the first axis of the transposed rows (measured for the 12 samples of each head,
    docs/tracking.md), so short rows are soft-maxed as columns there. Selected for CPU models
    only (`taptr.models.kernels`).
    """
    size = logits.shape[-1]
    if size >= 16 or logits.dim() < 2:
        return logits.softmax(-1)
    columns = logits.reshape(-1, size).t()
    return columns.softmax(0).t().reshape(logits.shape)
