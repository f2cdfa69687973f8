"""Deformable transformer encoder over one frame's multi-scale feature tokens (TAPTRv2 section
3.1, from Deformable-DETR; official `DeformableTransformerEncoderLayer`)."""

from __future__ import annotations

import torch
from torch import nn

from taptr.models.taptrv2.deformable_attention import DeformableAttention
from taptr.models.taptrv2.levels import LevelLayout
from taptr.models.taptrv2.ops import REFERENCE_OPS, PaperOps


class EncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention then FFN (official names norm1, linear1, ...)."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, num_levels: int, num_points: int,
                 ops: PaperOps = REFERENCE_OPS):
        super().__init__()
        self.ops = ops
        self.self_attn = DeformableAttention(dim, num_heads, num_levels, num_points, ops)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, tokens, token_pos, reference, layout, query_chunk=None):
        """tokens, token_pos: [Nb, S, C]; reference: [S, 2] -> [Nb, S, C]."""
        attended = self.self_attn(tokens + token_pos, reference.expand(tokens.shape[0], -1, -1),
                                  tokens, layout, query_chunk)
        tokens = self.norm1(tokens + attended)
        return self.ops.feed_forward(tokens, self.linear1, self.linear2, self.norm2)


def encoder_reference_points(layout: LevelLayout, device=None, dtype=torch.float32) -> torch.Tensor:
    """Token centres ((j + 0.5) / W_l, (i + 0.5) / H_l) of every level, concatenated: [S, 2]."""
    points = []
    for height, width in layout.shapes:
        ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.flatten(), grid_y.flatten()), -1))
    return torch.cat(points, 0)


class Encoder(nn.Module):
    """The deformable encoder (official `DeformableTransformerEncoder`): self-attention among
    one frame's multi-scale tokens."""

    def __init__(self, num_layers: int, dim: int, ffn_dim: int, num_heads: int,
                 num_levels: int, num_points: int, ops: PaperOps = REFERENCE_OPS):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, ffn_dim, num_heads, num_levels, num_points,
                                                 ops) for _ in range(num_layers))

    def forward(self, tokens: torch.Tensor, token_pos: torch.Tensor, layout: LevelLayout,
                query_chunk: int | None = None) -> torch.Tensor:
        """tokens, token_pos: [Nb, S, C] -> memory [Nb, S, C]."""
        reference = encoder_reference_points(layout, tokens.device, tokens.dtype)[None]
        for layer in self.layers:
            tokens = layer(tokens, token_pos, reference, layout, query_chunk)
        return tokens
