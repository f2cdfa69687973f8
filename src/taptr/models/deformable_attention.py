"""Multi-scale deformable attention in pure PyTorch.

All levels of a feature pyramid are packed side by side into one zero-bordered canvas, so one
sampling call serves every frame, head, level and point at once. Sampling follows the official
convention: a location (u, v) of level l is read at pixel (u * W_l - 0.5, v * H_l - 0.5) with
zero padding (`grid_sample(align_corners=False)` on grid = 2 * loc - 1). Locations more than
one pixel outside a level are clamped onto its zero border, which gives exactly the
zero-padding result.

Two ways to sample, the same numbers up to float rounding (`SAMPLING`):
* 'gather' (ours, the default): the canvas is channels-last, rows [Nb*Hc*Wc*M, d]; each sample
  is a weighted sum of its four neighbouring rows, and a whole attention output (every level,
  point and corner, weighted by bilinear x attention weights) is one bag of
  `F.embedding_bag(mode="sum")`, which reads contiguous channel rows. On a CPU this is 2-3x
  faster than `grid_sample`, which walks channel planes.
* 'grid_sample': one 4-D bilinear `F.grid_sample` on a channels-first canvas. ONNX export uses
  it (opset 17 has `GridSample`, not `EmbeddingBag` with per-sample weights).

Two modules use it: `DeformableAttention` (Deformable-DETR; the encoder) and
`KeyAwareDeformableAttention` (TAPTRv2's decoder cross-attention, which also returns the raw
attention logits and offsets for the Attention-based Position Update).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from taptr.models.common import concat, softmax_last

SAMPLING = ("gather", "grid_sample")


@dataclass(frozen=True)
class LevelLayout:
    """Where each level sits in the packed canvas.

    shapes: (H_l, W_l) per level; x_offsets: left column of each level's bordered block.
    """

    shapes: tuple[tuple[int, int], ...]
    x_offsets: tuple[int, ...]
    canvas_height: int
    canvas_width: int

    @classmethod
    def from_shapes(cls, shapes) -> "LevelLayout":
        shapes = tuple((int(h), int(w)) for h, w in shapes)
        offsets, cursor = [], 0
        for _, width in shapes:
            offsets.append(cursor)
            cursor += width + 2
        return cls(shapes, tuple(offsets), max(h for h, _ in shapes) + 2, cursor)

    def sizes(self, like: torch.Tensor) -> torch.Tensor:
        """[L, 2] (W_l, H_l) of every level, with `like`'s dtype and device."""
        return torch.tensor([[w, h] for h, w in self.shapes], dtype=like.dtype, device=like.device)

    @property
    def level_starts(self) -> list[int]:
        starts, total = [], 0
        for height, width in self.shapes:
            starts.append(total)
            total += height * width
        return starts


def pack_levels_rows(tokens: torch.Tensor, layout: LevelLayout, num_heads: int) -> torch.Tensor:
    """Flattened level tokens -> channels-last packed canvas as rows.

    tokens: [Nb, S, M*d] (levels concatenated, row-major inside a level).
    returns [Nb*Hc*Wc*M, d]: row ((b*Hc + y)*Wc + x)*M + m (the heads of a pixel side by
    side, so each level is copied in as it is, without a transpose), with a one-pixel zero
    border around every level. Only the cells outside the levels are zeroed (a third of the
    canvas for 3 levels), not the whole canvas first.
    """
    batch, _, channels = tokens.shape
    height, width = layout.canvas_height, layout.canvas_width
    canvas = tokens.new_empty(batch, height, width, channels)
    canvas[:, 0].zero_()
    for (level_height, level_width), start, x_offset in zip(layout.shapes, layout.level_starts,
                                                            layout.x_offsets):
        right = x_offset + 1 + level_width
        canvas[:, 1:1 + level_height, x_offset + 1:right] = (
            tokens[:, start:start + level_height * level_width]
            .view(batch, level_height, level_width, channels))
        canvas[:, 1:, x_offset].zero_()
        canvas[:, 1:, right].zero_()
        canvas[:, 1 + level_height:, x_offset + 1:right].zero_()
    return canvas.view(-1, channels // num_heads)


def pack_levels(tokens: torch.Tensor, layout: LevelLayout, num_heads: int) -> torch.Tensor:
    """Flattened level tokens -> packed canvas, channels first ('grid_sample' sampling).

    tokens: [Nb, S, M*d] (levels concatenated, row-major inside a level).
    returns [Nb*M, d, Hc, Wc] with a one-pixel zero border around every level: the canvas of
    `pack_levels_rows`, channels moved first.
    """
    head_dim = tokens.shape[-1] // num_heads
    rows = pack_levels_rows(tokens, layout, num_heads)
    canvas = rows.view(-1, layout.canvas_height, layout.canvas_width, num_heads, head_dim)
    return canvas.permute(0, 3, 4, 1, 2).reshape(-1, head_dim, layout.canvas_height,
                                                 layout.canvas_width)


def level_values_per_sample(per_level: torch.Tensor, num_points: int) -> torch.Tensor:
    """[L, 2] values of each level -> [L*P*2]: repeated for every point, (x, y) interleaved,
    the layout of a flattened [..., L, P, 2] tensor.

    Element-wise ops against this flat vector run on contiguous rows of L*P*2 numbers; the
    same ops broadcast over [..., L, P, 2] with an [L, 1, 2] tensor run 10-30x slower on a CPU
    (two-number inner loops) and give the same bits."""
    return per_level[:, None, :].expand(-1, num_points, -1).reshape(-1)


def _canvas_pixels(layout: LevelLayout, locations: torch.Tensor) -> torch.Tensor:
    """Normalised locations [Nb, Q, M, L, P, 2] of every level -> canvas pixels (x, y), same
    shape: level pixel (u * W_l - 0.5, v * H_l - 0.5), clamped to [-1, size] (onto the zero
    border), shifted to the level's block."""
    batch, num_queries, num_heads, _, num_points, _ = locations.shape
    sizes = level_values_per_sample(layout.sizes(locations), num_points)  # (W, H) per level
    block_shifts = torch.tensor([[x + 1, 1] for x in layout.x_offsets], dtype=locations.dtype,
                                device=locations.device)
    shifts = level_values_per_sample(block_shifts, num_points)
    pixels = locations.reshape(batch, num_queries, num_heads, -1) * sizes - 0.5
    pixels = torch.minimum(pixels, sizes).clamp_min(-1.0)
    return (pixels + shifts).view(locations.shape)


def sample_packed(canvas: torch.Tensor, layout: LevelLayout, locations: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of every level at normalised locations.

    canvas: [Nb*M, d, Hc, Wc] from `pack_levels`.
    locations: [Nb, Q, M, L, P, 2] normalised (u, v) per level (zero padding outside [0, 1]).
    returns [Nb*M, d, Q, L*P].
    """
    batch, num_queries, num_heads, num_levels, num_points, _ = locations.shape
    canvas_xy = _canvas_pixels(layout, locations)
    scale = torch.tensor([2.0 / (layout.canvas_width - 1), 2.0 / (layout.canvas_height - 1)],
                         dtype=locations.dtype, device=locations.device)
    grid = canvas_xy * scale - 1
    grid = grid.permute(0, 2, 1, 3, 4, 5).reshape(batch * num_heads, num_queries,
                                                  num_levels * num_points, 2)
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def bilinear_rows(layout: LevelLayout, locations: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The four canvas rows and bilinear weights of every sample ('gather' sampling).

    locations: [Nb, Q, M, L, P, 2] normalised (u, v) per level.
    returns (rows [Nb, Q, M, L*P, 4] int64 into `pack_levels_rows`'s canvas, weights
    [Nb, Q, M, L*P, 4]); corners in the order (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1).
    """
    batch, _, num_heads = locations.shape[:3]
    height, width = layout.canvas_height, layout.canvas_width
    x, y = _canvas_pixels(layout, locations).flatten(3, 4).unbind(-1)  # [Nb, Q, M, LP]
    # The clamps keep x0 + 1 and y0 + 1 inside the canvas; a sample on the last column or row
    # then has fraction 1, the same value.
    # (A NaN location gets corner 0 and NaN weights, so a NaN output, as with grid_sample,
    # instead of an index out of range.)
    x0 = torch.nan_to_num(x.detach().floor()).clamp(0, width - 2)
    y0 = torch.nan_to_num(y.detach().floor()).clamp(0, height - 2)
    fx, fy = x - x0, y - y0
    images = torch.arange(batch, device=locations.device).view(batch, 1, 1, 1)
    heads = torch.arange(num_heads, device=locations.device).view(1, 1, num_heads, 1)
    top_left = ((images * height + y0.long()) * width + x0.long()) * num_heads + heads
    right, down = num_heads, width * num_heads
    gx, gy = 1 - fx, 1 - fy
    # Corners written into the last axis one by one: 3x faster on a CPU than `torch.stack`
    # along it, the same values.
    rows = _corners(top_left, (top_left + right, top_left + down, top_left + (down + right)))
    weights = _corners(gx * gy, (fx * gy, gx * fy, fx * fy))
    return rows, weights


def _corners(first: torch.Tensor, others) -> torch.Tensor:
    """[..., 4] from four tensors [...] (the corners of `bilinear_rows`)."""
    out = first.new_empty(*first.shape, 4)
    for index, corner in enumerate((first, *others)):
        out[..., index] = corner
    return out


def weighted_rows(canvas: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor
                  ) -> torch.Tensor:
    """Sum of canvas rows times weights over the last axis.

    canvas: [R, d]; rows: [..., K] int64 indices into it; weights: [..., K] -> [..., d], in
    the wider of the two dtypes (under bf16/fp16 autocast the sampling stays in float32, like
    `grid_sample`'s; callers promote the canvas once, so this cast is free)."""
    dtype = torch.promote_types(canvas.dtype, weights.dtype)
    out = F.embedding_bag(rows.reshape(-1, rows.shape[-1]), canvas.to(dtype),
                          per_sample_weights=weights.reshape(-1, rows.shape[-1]).to(dtype),
                          mode="sum")
    return out.view(*rows.shape[:-1], canvas.shape[-1])


def _check_sampling(sampling: str) -> None:
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")


def _chunks(total: int, size: int | None):
    size = total if not size else size
    for start in range(0, total, max(size, 1)):
        yield slice(start, min(start + size, total))


def deformable_attention(values: torch.Tensor, layout: LevelLayout, locations: torch.Tensor,
                         weights: torch.Tensor, query_chunk: int | None = None,
                         sampling: str = "gather") -> torch.Tensor:
    """Standard multi-scale deformable attention core (Deformable-DETR `MSDeformAttn`).

    values: [Nb, S, M, d]; locations: [Nb, Q, M, L, P, 2]; weights: [Nb, Q, M, L, P]
    (already normalised). returns [Nb, Q, M*d]. sampling: 'gather' or 'grid_sample'
    (module docstring). Raises ValueError for another sampling.
    """
    _check_sampling(sampling)
    batch, _, num_heads, head_dim = values.shape
    if sampling == "gather":
        dtype = torch.promote_types(values.dtype, locations.dtype)
        canvas = pack_levels_rows(values.flatten(2), layout, num_heads).to(dtype)
        outputs = []
        for chunk in _chunks(locations.shape[1], query_chunk):
            rows, bilinear = bilinear_rows(layout, locations[:, chunk])  # [Nb, q, M, LP, 4]
            combined = bilinear * weights[:, chunk].flatten(3)[..., None]
            out = weighted_rows(canvas, rows.flatten(3), combined.flatten(3))  # [Nb, q, M, d]
            outputs.append(out.flatten(2))
        return concat(outputs, 1)
    canvas = pack_levels(values.flatten(2), layout, num_heads)
    outputs = []
    for chunk in _chunks(locations.shape[1], query_chunk):
        samples = sample_packed(canvas, layout, locations[:, chunk])  # [Nb*M, d, q, LP]
        chunk_weights = weights[:, chunk].permute(0, 2, 1, 3, 4).flatten(3)
        chunk_weights = chunk_weights.reshape(batch * num_heads, 1, -1, samples.shape[-1])
        out = (samples * chunk_weights).sum(-1)  # [Nb*M, d, q]
        outputs.append(out.view(batch, num_heads * head_dim, -1).transpose(1, 2))
    return concat(outputs, 1)


def key_aware_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        layout: LevelLayout, locations: torch.Tensor,
                        query_chunk: int | None = None, sampling: str = "gather"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Key-aware deformable attention core (TAPTRv2, paper section 3.3; official
    `MSDeformAttn_KeyAware`).

    queries: [Nb, Q, M, d]; keys, values: [Nb, S, M, d]; locations: [Nb, Q, M, L, P, 2].
    Per head, logits <q_m, k_(m,l,p)> / sqrt(d) are soft-maxed over the L*P samples.
    returns (output [Nb, Q, M*d], raw logits [Nb, Q, M*L*P] head-major, then level, point).
    sampling: 'gather' or 'grid_sample' (module docstring). Raises ValueError for another.
    """
    _check_sampling(sampling)
    batch, _, num_heads, head_dim = values.shape
    if sampling == "gather":
        dtype = torch.promote_types(values.dtype, locations.dtype)
        key_canvas = pack_levels_rows(keys.flatten(2), layout, num_heads).to(dtype)
        value_canvas = pack_levels_rows(values.flatten(2), layout, num_heads).to(dtype)
        outputs, all_logits = [], []
        for chunk in _chunks(locations.shape[1], query_chunk):
            rows, bilinear = bilinear_rows(layout, locations[:, chunk])  # [Nb, q, M, LP, 4]
            sampled_keys = weighted_rows(key_canvas, rows, bilinear)  # [Nb, q, M, LP, d]
            # <q, k> of every sample as a batched matrix-vector product (6x faster on a CPU
            # than a broadcast product and a sum), in the samples' dtype also under autocast
            # (as the grid_sample path's product is)
            with torch.autocast(sampled_keys.device.type, enabled=False):
                chunk_queries = queries[:, chunk, :, :, None].to(sampled_keys.dtype)
                logits = torch.matmul(sampled_keys, chunk_queries)[..., 0]
            logits = logits / math.sqrt(head_dim)
            attention = softmax_last(logits)  # [Nb, q, M, LP]
            combined = (bilinear * attention[..., None]).flatten(3)
            outputs.append(weighted_rows(value_canvas, rows.flatten(3), combined).flatten(2))
            all_logits.append(logits.flatten(2))
        return concat(outputs, 1), concat(all_logits, 1)
    packed = torch.cat((keys, values), dim=-1).flatten(2)  # [Nb, S, M*2d]
    canvas = pack_levels(packed, layout, num_heads)
    outputs, all_logits = [], []
    for chunk in _chunks(locations.shape[1], query_chunk):
        samples = sample_packed(canvas, layout, locations[:, chunk])  # [Nb*M, 2d, q, LP]
        sampled_keys, sampled_values = samples[:, :head_dim], samples[:, head_dim:]
        chunk_queries = queries[:, chunk].permute(0, 2, 3, 1).reshape(batch * num_heads,
                                                                      head_dim, -1, 1)
        logits = (chunk_queries * sampled_keys).sum(1) / math.sqrt(head_dim)  # [Nb*M, q, LP]
        attention = logits.softmax(-1)
        out = (sampled_values * attention[:, None]).sum(-1)  # [Nb*M, d, q]
        outputs.append(out.view(batch, num_heads * head_dim, -1).transpose(1, 2))
        all_logits.append(logits.view(batch, num_heads, logits.shape[1], -1)
                          .permute(0, 2, 1, 3).flatten(2))
    return concat(outputs, 1), concat(all_logits, 1)


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


class DeformableAttention(nn.Module):
    """Deformable-DETR `MSDeformAttn` (parameters `sampling_offsets`, `attention_weights`,
    `value_proj`, `output_proj`)."""

    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int):
        super().__init__()
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling = "gather"  # or 'grid_sample' (set by ONNX export; module docstring)
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(
                _grid_init_bias(self.num_heads, self.num_levels, self.num_points))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, source: torch.Tensor,
                layout: LevelLayout, query_chunk: int | None = None) -> torch.Tensor:
        """query [Nb, Q, C], reference [Nb, Q, 2] (u, v), source [Nb, S, C] -> [Nb, Q, C]."""
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        values = self.value_proj(source).view(batch, source.shape[1], heads, -1)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = softmax_last(weights).view(batch, num_queries, heads, levels, points)
        locations = offset_locations(reference, offsets, layout)
        out = deformable_attention(values, layout, locations, weights, query_chunk,
                                   self.sampling)
        return self.output_proj(out)


class KeyAwareDeformableAttention(nn.Module):
    """TAPTRv2's key-aware deformable cross-attention (`MSDeformAttn_KeyAware`).

    Keys and values are projections of the memory without positional encoding; attention
    weights come from query-key dot products within each head.
    """

    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int):
        super().__init__()
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling = "gather"  # or 'grid_sample' (set by ONNX export; module docstring)
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.value_proj = nn.Linear(dim, dim)
        self.key_proj = nn.Linear(dim, dim)
        self.query_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The official model ends with xavier on the offset weight (docs/architecture.md,
        # section 9.1, item 8).
        nn.init.xavier_uniform_(self.sampling_offsets.weight)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(
                _grid_init_bias(self.num_heads, self.num_levels, self.num_points))
        for linear in (self.value_proj, self.key_proj, self.query_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

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
        out, logits = key_aware_attention(queries, keys, values, layout, locations, query_chunk,
                                          self.sampling)
        return self.output_proj(out), logits, offsets
