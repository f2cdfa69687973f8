"""The transformer FFN over rows in chunks (ours; inference only)."""

from __future__ import annotations

import torch
from torch import nn

# Rows per chunk of `chunked_feed_forward`: its hidden activations [rows, ffn_dim] stay
# within about this many numbers (4 MB), in cache instead of one large temporary.
FEED_FORWARD_CHUNK = 1 << 20


def chunked_feed_forward(inputs: torch.Tensor, linear1: nn.Linear, linear2: nn.Linear,
                         norm: nn.Module) -> torch.Tensor:
    """`taptrv2.common.feed_forward` (norm(x + linear2(relu(linear1(x))))), x [..., C] ->
    [..., C], over rows in chunks: the hidden activations of all tokens (712 MB for the paper
    preset's encoder over 4 frames) are never allocated at once, about 30% faster on a CPU
    (docs/tracking.md), the same numbers. Writes into its outputs and activations in place:
    no autograd (selected for inference only, `taptr.models.kernels`).
    """
    flat = inputs.reshape(-1, inputs.shape[-1])
    rows = max(64, FEED_FORWARD_CHUNK // linear1.out_features)
    if flat.shape[0] <= rows:
        return norm(inputs + linear2(torch.relu_(linear1(inputs))))
    out = torch.empty_like(flat)
    for start in range(0, flat.shape[0], rows):
        part = flat[start:start + rows]
        out[start:start + rows] = norm(part + linear2(torch.relu_(linear1(part))))
    return out.view(inputs.shape)
