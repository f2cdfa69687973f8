"""Multi-scale feature levels side by side on one canvas (Deformable-DETR's multi-scale memory,
laid out for sampling).

All levels of a feature pyramid are packed side by side into one zero-bordered canvas, so one
sampling call serves every frame, head, level and point at once. Sampling follows the official
convention: a location (u, v) of level l is read at pixel (u * W_l - 0.5, v * H_l - 0.5) with
zero padding (`grid_sample(align_corners=False)` on grid = 2 * loc - 1). Locations more than
one pixel outside a level are clamped onto its zero border, which gives exactly the
zero-padding result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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


def canvas_pixels(layout: LevelLayout, locations: torch.Tensor) -> torch.Tensor:
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
    canvas_xy = canvas_pixels(layout, locations)
    scale = torch.tensor([2.0 / (layout.canvas_width - 1), 2.0 / (layout.canvas_height - 1)],
                         dtype=locations.dtype, device=locations.device)
    grid = canvas_xy * scale - 1
    grid = grid.permute(0, 2, 1, 3, 4, 5).reshape(batch * num_heads, num_queries,
                                                  num_levels * num_points, 2)
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
