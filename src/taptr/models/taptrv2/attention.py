"""Multi-head attention with `nn.MultiheadAttention`'s parameter names and a boolean mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taptr.models.taptrv2.common import concat


class MultiheadAttention(nn.Module):
    """Parameters `in_proj_weight` [3C, C], `in_proj_bias` [3C], `out_proj` (as in PyTorch).

    Unlike `nn.MultiheadAttention` it takes a per-sequence mask and can process the queries in
    chunks (exactly: every query row is independent), which bounds memory for many points.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query_key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor | None,
                query_chunk: int | None = None) -> torch.Tensor:
        """query_key, value: [Nb, L, C]; allowed: [Nb, L, L] bool (True = may attend), or None
        (every pair may attend: no mask, a faster kernel).

        Queries and keys are projections of `query_key`, values of `value`. returns [Nb, L, C].
        """
        batch, length, dim = value.shape
        heads = self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)

        def split(tensor):
            return tensor.view(batch, -1, heads, dim // heads).transpose(1, 2)

        queries = split(F.linear(query_key, w_q, b_q))
        keys = split(F.linear(query_key, w_k, b_k))
        values = split(F.linear(value, w_v, b_v))
        chunk = query_chunk or length
        outputs = []
        for start in range(0, length, chunk):
            rows = slice(start, min(start + chunk, length))
            mask = None if allowed is None else allowed[:, None, rows]
            outputs.append(F.scaled_dot_product_attention(queries[:, :, rows], keys, values,
                                                          attn_mask=mask))
        out = concat(outputs, 2).transpose(1, 2).reshape(batch, length, dim)
        return self.out_proj(out)
