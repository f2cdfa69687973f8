"""Rendering of synthetic scenes: inverse-warp every layer and composite back to front.

For each layer and frame, every frame pixel centre is mapped to the layer's texture (the
layer's homography, then its elastic deformation) and the texture is sampled bilinearly
(`grid_sample`). Foreground textures are premultiplied RGBA, composited with the "over"
operator from the background (layer 0) to the nearest layer. All scenes of a batch and all
frames of a chunk are drawn by one `grid_sample` per layer, on the layout's device; a
foreground layer is only drawn inside the frame window its texture can reach in that chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from taptr.data.scenes.layout import SceneLayout
from taptr.data.scenes.motion import (
    apply_homography,
    frame_fields,
    homography_grid,
    sample_displacement,
    texture_normalisation,
)

OWNER_ALPHA = 0.5  # a layer owns a pixel where its alpha reaches this (and no nearer one does)


@dataclass
class RenderedScenes:
    """Output of `render_layout`.

    Attributes:
        video: `[B, 3, T, H, W]` float RGB in [0, 1].
        owner: `[B, T, H, W]` uint8, the nearest layer whose alpha >= 0.5 at each pixel centre
            (0 = background).
        flow: `[B, 2, T, H, W]` float, the motion in pixels per frame of what each pixel shows
            (alpha-blended like colours), or None when not requested.
    """

    video: torch.Tensor
    owner: torch.Tensor
    flow: torch.Tensor | None


@dataclass
class _Window:
    """Rows top..bottom-1 and columns left..right-1 of the frame."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def rows(self) -> slice:
        return slice(self.top, self.bottom)

    @property
    def columns(self) -> slice:
        return slice(self.left, self.right)


def _reach_window(layer_to_frame: torch.Tensor, texture_size: int, margin: float, frame_size):
    """Frame window covering the layer's texture square (grown by `margin` texture pixels)
    in every scene and frame of `layer_to_frame` `[B, t, 3, 3]`; None if it misses the frame."""
    low, high = -0.5 - margin, texture_size - 0.5 + margin
    corners = layer_to_frame.new_tensor([[low, low], [high, low], [low, high], [high, high]])
    mapped = apply_homography(layer_to_frame[:, :, None], corners)  # [B, t, 4, 2]
    minimum = mapped.reshape(-1, 2).amin(dim=0).tolist()
    maximum = mapped.reshape(-1, 2).amax(dim=0).tolist()
    height, width = frame_size
    window = _Window(
        top=max(0, math.floor(minimum[1])),
        bottom=min(height, math.ceil(maximum[1]) + 1),
        left=max(0, math.floor(minimum[0])),
        right=min(width, math.ceil(maximum[0]) + 1),
    )
    if window.top >= window.bottom or window.left >= window.right:
        return None
    return window


def _sample(texture: torch.Tensor, grid: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Texture `[B, C, h, w]` sampled at grid `[B, t, H, W, 2]`: `[B, C, t, H, W]`."""
    batch, frames, height, width, _ = grid.shape
    sampled = F.grid_sample(
        texture,
        grid.reshape(batch, frames * height, width, 2),
        mode="bilinear",
        padding_mode=padding_mode,
        align_corners=False,
    )
    return sampled.reshape(batch, texture.shape[1], frames, height, width)


def _layer_flow(frame_to_layer, layer_to_frame, frames: slice, window: _Window, projective: bool):
    """Pixel motion `[B, 2, t, h, w]` of a rigidly moving layer (central differences).

    frame_to_layer, layer_to_frame: `[B, T, 3, 3]` over the whole clip; `frames` selects the
    chunk and `window` the pixels. The deformation is ignored (the flow only drives blur).
    """
    total = frame_to_layer.shape[1]
    index = torch.arange(total, device=frame_to_layer.device)[frames]
    later = (index + 1).clamp(max=total - 1)
    earlier = (index - 1).clamp(min=0)
    span = (later - earlier).clamp(min=1).to(frame_to_layer.dtype)
    to_later = layer_to_frame[:, later] @ frame_to_layer[:, index]
    to_earlier = layer_to_frame[:, earlier] @ frame_to_layer[:, index]
    height, width = window.bottom - window.top, window.right - window.left
    grids = [
        homography_grid(matrices, height, width, window.left, window.top, projective)
        for matrices in (to_later, to_earlier)
    ]
    flow = (grids[0] - grids[1]) / span[None, :, None, None, None]
    return flow.permute(0, 4, 1, 2, 3)


def _deform_margin(layout: SceneLayout, slot: int, frames: slice) -> float:
    """Bound (texture pixels) on how far the slot's deformation moves texture points."""
    fields = layout.deform_fields[:, slot].reshape(layout.batch_size, 2, -1)
    peak = fields.abs().amax(dim=-1) * math.sqrt(2)  # [B, k]: bound on |D_k|
    coefficients = layout.deform_coefficients[:, slot, frames].abs().amax(dim=1)  # [B, k]
    normalised = float((peak * coefficients).sum(dim=-1).max())
    return normalised * layout.foreground.shape[-1] / 2 + 1.0


def _render_chunk(layout: SceneLayout, frames: slice, with_flow: bool):
    """Video `[B, 3, t, H, W]`, owner `[B, t, H, W]` and flow of one chunk of frames."""
    height, width = layout.frame_size
    full = _Window(0, height, 0, width)
    background_height, background_width = layout.background.shape[-2:]
    to_grid = texture_normalisation(background_width, background_height, layout.background)
    grid = homography_grid(to_grid @ layout.frame_to_background[:, frames], height, width)
    video = _sample(layout.background, grid, "reflection")
    del grid
    owner = torch.zeros(video.shape[0], *video.shape[2:], dtype=torch.uint8, device=video.device)
    flow = None
    if with_flow:
        flow = _layer_flow(
            layout.frame_to_background, layout.background_to_frame, frames, full, True
        )
    size = layout.foreground.shape[-1]
    to_grid = texture_normalisation(size, size, layout.foreground)
    deforming = set(layout.deforming_slots)
    for slot in range(layout.num_slots):
        deform = slot in deforming
        margin = _deform_margin(layout, slot, frames) if deform else 1.0
        window = _reach_window(
            layout.foreground_to_frame[:, slot, frames], size, margin, layout.frame_size
        )
        if window is None:
            continue
        grid = homography_grid(
            to_grid @ layout.frame_to_foreground[:, slot, frames],
            window.bottom - window.top,
            window.right - window.left,
            window.left,
            window.top,
            projective=False,
        )
        if deform:
            fields = frame_fields(
                layout.deform_fields[:, slot], layout.deform_coefficients[:, slot, frames]
            )
            grid = grid + sample_displacement(fields, grid)
        sampled = _sample(layout.foreground[:, slot], grid, "zeros")
        del grid
        alpha = sampled[:, 3:4]
        video_window = video[..., window.rows, window.columns]
        video_window.mul_(1 - alpha).add_(sampled[:, :3])
        owner[..., window.rows, window.columns].masked_fill_(alpha[:, 0] >= OWNER_ALPHA, slot + 1)
        if with_flow:
            layer_flow = _layer_flow(
                layout.frame_to_foreground[:, slot],
                layout.foreground_to_frame[:, slot],
                frames,
                window,
                False,
            )
            flow[..., window.rows, window.columns].lerp_(layer_flow, alpha)
    return video.clamp_(0, 1), owner, flow


def render_layout(
    layout: SceneLayout, with_flow: bool = False, max_pixels_per_pass: int | None = None
) -> RenderedScenes:
    """Draw every frame of every scene of `layout`, in chunks of frames.

    max_pixels_per_pass: B * frames * H * W drawn at once per layer (bounds memory; smaller
    chunks also give foreground layers tighter windows). Default: 2**19 on CPU (cache
    friendly), 2**25 on GPUs (fewer, larger kernels).
    """
    if max_pixels_per_pass is None:
        max_pixels_per_pass = 1 << 19 if layout.background.device.type == "cpu" else 1 << 25
    height, width = layout.frame_size
    per_frame = layout.batch_size * height * width
    chunk = max(1, max_pixels_per_pass // per_frame)
    videos, owners, flows = [], [], []
    for start in range(0, layout.num_frames, chunk):
        frames = slice(start, min(layout.num_frames, start + chunk))
        video, owner, flow = _render_chunk(layout, frames, with_flow)
        videos.append(video)
        owners.append(owner)
        flows.append(flow)
    return RenderedScenes(
        video=torch.cat(videos, dim=2),
        owner=torch.cat(owners, dim=1),
        flow=torch.cat(flows, dim=2) if with_flow else None,
    )
