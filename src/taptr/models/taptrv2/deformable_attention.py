"""TAPTRv2's deformable attentions (the modules; the sampling math is `taptrv2.ops`).

Two modules: `DeformableAttention` (Deformable-DETR `MSDeformAttn`; the encoder) and
`KeyAwareDeformableAttention` (TAPTRv2's decoder cross-attention, paper section 3.3, which also
returns the raw attention logits and offsets for the Attention-based Position Update).
Each holds `ops` (`taptrv2.ops.PaperOps`; the plain math unless kernels were selected by name).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from taptr.models.taptrv2.levels import LevelLayout, level_values_per_sample
from taptr.models.taptrv2.ops import REFERENCE_OPS, PaperOps


def offset_locations(reference: torch.Tensor, offsets: torch.Tensor,
                     layout: LevelLayout) -> torch.Tensor:
    """Sampling locations: reference [Nb, Q, 2] (u, v) moved by offsets [Nb, Q, M, L, P, 2]
    given in pixels of each level -> [Nb, Q, M, L, P, 2] normalised."""
    batch, num_queries, num_heads, num_levels, num_points, _ = offsets.shape
    sizes = level_values_per_sample(layout.sizes(offsets), num_points)
    moved = offsets.reshape(batch, num_queries, num_heads, -1) / sizes
    starts = reference.repeat(1, 1, num_levels * num_points)[:, :, None, :]
    return (starts + moved).view(offsets.shape)


def _grid_init_bias(num_heads: int, num_levels: int, num_points: int) -> torch.Tensor:
    """Deformable-DETR offset bias: head m points along angle 2*pi*m/M, p-th point (p+1) away."""
    angles = torch.arange(num_heads, dtype=torch.float32) * (2.0 * math.pi / num_heads)
    directions = torch.stack([angles.cos(), angles.sin()], -1)
    directions = directions / directions.abs().max(-1, keepdim=True)[0]
    grid = directions.view(num_heads, 1, 1, 2).repeat(1, num_levels, num_points, 1)
    grid = grid * torch.arange(1, num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
    return grid.flatten()


class _SampledAttention(nn.Module):
    """What both deformable attentions share: M heads sampling P points on each of L levels
    around a reference, at offsets from the linear layer `sampling_offsets` (created first, as
    in the official modules, so random initialisation draws in the same order)."""

    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int,
                 ops: PaperOps):
        super().__init__()
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.ops = ops
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)

    def _grid_init_offsets(self) -> None:
        """The offsets' bias starts on the official grid (`_grid_init_bias`)."""
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(_grid_init_bias(
                self.num_heads, self.num_levels, self.num_points))


def _xavier_zero_bias(*linears: nn.Linear) -> None:
    """Xavier-uniform weights and zero biases, in the given order (the official one)."""
    for linear in linears:
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)


class DeformableAttention(_SampledAttention):
    """Deformable-DETR `MSDeformAttn` (parameters `sampling_offsets`, `attention_weights`,
    `value_proj`, `output_proj`)."""

    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int,
                 ops: PaperOps = REFERENCE_OPS):
        super().__init__(dim, num_heads, num_levels, num_points, ops)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        self._grid_init_offsets()
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        _xavier_zero_bias(self.value_proj, self.output_proj)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, source: torch.Tensor,
                layout: LevelLayout, query_chunk: int | None = None) -> torch.Tensor:
        """query [Nb, Q, C], reference [Nb, Q, 2] (u, v), source [Nb, S, C] -> [Nb, Q, C]."""
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        values = self.value_proj(source).view(batch, source.shape[1], heads, -1)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = self.ops.softmax(weights).view(batch, num_queries, heads, levels, points)
        locations = offset_locations(reference, offsets, layout)
        out = self.ops.deformable_attention(values, layout, locations, weights, query_chunk)
        return self.output_proj(out)


class KeyAwareDeformableAttention(_SampledAttention):
    """TAPTRv2's key-aware deformable cross-attention (`MSDeformAttn_KeyAware`).

    Keys and values are projections of the memory without positional encoding; attention
    weights come from query-key dot products within each head.
    """

    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int,
                 ops: PaperOps = REFERENCE_OPS):
        super().__init__(dim, num_heads, num_levels, num_points, ops)
        self.value_proj = nn.Linear(dim, dim)
        self.key_proj = nn.Linear(dim, dim)
        self.query_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The official model ends with xavier on the offset weight (docs/architecture.md,
        # section 9.1, item 8).
        nn.init.xavier_uniform_(self.sampling_offsets.weight)
        self._grid_init_offsets()
        _xavier_zero_bias(self.value_proj, self.key_proj, self.query_proj, self.output_proj)

    def forward(self, query: torch.Tensor, positions: torch.Tensor, memory: torch.Tensor,
                layout: LevelLayout, query_chunk: int | None = None):
        """Attend from points to their frame's memory.

        query: [Nb, Q, C] (content + positional query); positions: [Nb, Q, 2] (u, v);
        memory: [Nb, S, C]. returns (output [Nb, Q, C], logits [Nb, Q, M*L*P],
        offsets [Nb, Q, M, L, P, 2] in level pixels).
        """
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        values = self.value_proj(memory).view(batch, memory.shape[1], heads, -1)
        keys = self.key_proj(memory).view(batch, memory.shape[1], heads, -1)
        queries = self.query_proj(query).view(batch, num_queries, heads, -1)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        locations = offset_locations(positions, offsets, layout)
        out, logits = self.ops.key_aware_attention(queries, keys, values, layout, locations,
                                                   query_chunk)
        return self.output_proj(out), logits, offsets
