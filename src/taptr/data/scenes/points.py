"""Exact ground truth of synthetic scenes: query sampling, tracks and visibility.

A point is a fixed location on one layer's texture. It is sampled at a frame (mostly frame 0,
some at T/2, some anywhere) on a pixel that layer shows in the rendered frame; the layer is
drawn in proportion to its visible area at that frame (a share `background_fraction` of the
points goes to the background). Its track is the texture location pushed through the layer's
transform at every frame (deformation inverted by fixed-point iteration). It is visible where
it lies inside the frame (pixel centres 0..W-1, 0..H-1) and the nearer layers' combined alpha
there is below 1/2. Points are only drawn where their own layer's alpha is at least 3/4 (not
on the soft rim of a cut-out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from taptr import coords
from taptr.data.scenes.config import SceneConfig
from taptr.data.scenes.layout import SceneLayout
from taptr.data.scenes.motion import (
    apply_homography,
    frame_fields,
    invert_deformation,
    sample_displacement,
    texture_normalisation,
)

COVERAGE_LIMIT = 0.5  # a point is hidden where nearer layers cover at least this much
OWN_ALPHA_MIN = 0.75  # points lie where their layer is this opaque (not on its soft rim)
FIRST_FRAME_SHARE = 0.5  # share of points sampled at frame 0
MIDDLE_FRAME_SHARE = 0.25  # share sampled at frame T // 2 (the rest: uniformly random frames)
SMALL_LAYER_FLOOR = 0.02  # a visible layer gets at least this share of the foreground points
PIXEL_TRIES = 64  # uniform pixel draws per candidate before the exact fallback


@dataclass
class PointTracks:
    """Ground truth of one scene.

    Attributes:
        tracks: float32 `[T, N, 2]` pixel (x, y).
        visible: bool `[T, N]`.
        query_frames: int64 `[N]`, a frame where the point is visible.
        layers: int64 `[N]`, the layer each point lies on (0 = background, f + 1 = slot f).
        sampled_frames: int64 `[N]`, the frame the point was drawn at.
        coverage: float32 `[T, N]`, combined alpha of the nearer layers at the point.
    """

    tracks: torch.Tensor
    visible: torch.Tensor
    query_frames: torch.Tensor
    layers: torch.Tensor
    sampled_frames: torch.Tensor
    coverage: torch.Tensor

    @classmethod
    def concatenate(cls, parts: list["PointTracks"]) -> "PointTracks":
        """All points of `parts`, in order."""
        return cls(
            tracks=torch.cat([part.tracks for part in parts], dim=1),
            visible=torch.cat([part.visible for part in parts], dim=1),
            query_frames=torch.cat([part.query_frames for part in parts]),
            layers=torch.cat([part.layers for part in parts]),
            sampled_frames=torch.cat([part.sampled_frames for part in parts]),
            coverage=torch.cat([part.coverage for part in parts], dim=1),
        )

    def select(self, index: torch.Tensor) -> "PointTracks":
        """The points `index` `[n]` (a subset, reordering or repetition)."""
        return PointTracks(
            tracks=self.tracks[:, index],
            visible=self.visible[:, index],
            query_frames=self.query_frames[index],
            layers=self.layers[index],
            sampled_frames=self.sampled_frames[index],
            coverage=self.coverage[:, index],
        )


def _sample_frames(count: int, num_frames: int, generator: torch.Generator) -> torch.Tensor:
    """`[count]` int64 sampling frames: 0, T // 2, or uniformly random."""
    choice = torch.rand(count, generator=generator)
    anywhere = torch.randint(num_frames, (count,), generator=generator)
    frames = torch.where(choice < FIRST_FRAME_SHARE + MIDDLE_FRAME_SHARE, num_frames // 2, anywhere)
    return torch.where(choice < FIRST_FRAME_SHARE, 0, frames)


def _layer_weights(counts: torch.Tensor, background_fraction: float) -> torch.Tensor:
    """Probabilities `[U, L]` of drawing each layer given its pixel counts `[U, L]`."""
    counts = counts.double()
    foreground = counts[:, 1:]
    total = foreground.sum(dim=1, keepdim=True)
    floor = SMALL_LAYER_FLOOR * total
    foreground = torch.where(foreground > 0, torch.maximum(foreground, floor), foreground)
    foreground = foreground / foreground.sum(dim=1, keepdim=True).clamp_min(1e-12)
    has_foreground = total > 0
    has_background = counts[:, :1] > 0
    background_share = torch.where(
        has_foreground, torch.where(has_background, background_fraction, 0.0), 1.0
    )
    return torch.cat([background_share, (1 - background_share) * foreground], dim=1)


def _sample_pixels(
    owner: torch.Tensor, frames: torch.Tensor, background_fraction: float, generator
):
    """Draw a layer and a pixel it owns for every candidate.

    owner: `[T, H, W]` uint8 of one scene (any device); frames: `[n]` int64 (CPU).
    Returns (layers `[n]` int64 CPU, positions `[n, 2]` float32 on owner's device).
    Pixels are found by rejection sampling (uniform pixels until one belongs to the layer),
    with an exact fallback for the few candidates on tiny layers.
    """
    device = owner.device
    num_layers = int(owner.max()) + 1
    height, width = owner.shape[1:]
    unique_frames, row = torch.unique(frames, return_inverse=True)
    labels = owner[unique_frames.to(device)].reshape(len(unique_frames), -1)
    keyed = labels.long() + num_layers * torch.arange(len(unique_frames), device=device)[:, None]
    counts = torch.bincount(keyed.flatten(), minlength=len(unique_frames) * num_layers)
    counts = counts.reshape(len(unique_frames), num_layers).cpu()
    weights = _layer_weights(counts, background_fraction)[row]
    layers = torch.multinomial(weights, 1, generator=generator)[:, 0]
    count = len(frames)
    tries = torch.randint(height * width, (count, PIXEL_TRIES), generator=generator)
    exact_keys = torch.rand(count, generator=generator)
    row_device, layers_device, tries_device = row.to(device), layers.to(device), tries.to(device)
    hits = labels[row_device[:, None], tries_device] == layers_device[:, None]  # [n, tries]
    first_hit = hits.to(torch.uint8).argmax(dim=1)
    flat = tries_device[torch.arange(count, device=device), first_hit]
    missed = torch.nonzero(~hits.any(dim=1)).flatten().cpu()
    for candidate in missed.tolist():  # tiny layers: pick among all their pixels
        pixels = torch.nonzero(labels[row[candidate]] == layers[candidate]).flatten()
        flat[candidate] = pixels[int(exact_keys[candidate] * len(pixels))]
    jitter = (torch.rand(count, 2, generator=generator) - 0.5).to(device)
    positions = torch.stack([flat % width, flat // width], dim=1).float() + jitter
    limits = positions.new_tensor([width - 1, height - 1])
    positions = torch.minimum(positions.clamp_min(0), limits)
    return layers, positions


def _foreground_grid(layout: SceneLayout, scene: int, points: torch.Tensor, fields) -> torch.Tensor:
    """Deformed normalised texture coordinates `[F, T, P, 2]` of frame points `[T, P, 2]`
    on every foreground slot of `scene` (fields: `[F, T, 2, G, G]`)."""
    size = layout.foreground.shape[-1]
    to_grid = texture_normalisation(size, size, points)
    matrices = to_grid @ layout.frame_to_foreground[scene]  # [F, T, 3, 3]
    grid = apply_homography(matrices[:, :, None], points[None])
    return grid + sample_displacement(fields, grid)


def _foreground_alpha(
    layout: SceneLayout, scene: int, points: torch.Tensor, fields
) -> torch.Tensor:
    """Alpha `[F, T, P]` of every foreground slot at frame points `[T, P, 2]`."""
    grid = _foreground_grid(layout, scene, points, fields)
    slots, frames, count, _ = grid.shape
    alpha = F.grid_sample(
        layout.foreground[scene, :, 3:4],
        grid.reshape(slots, frames, count, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return alpha[:, 0]


def _track_points(layout, scene, layers, positions, frames, fields) -> torch.Tensor:
    """Tracks `[T, n, 2]` of points first seen at `positions` `[n, 2]` in `frames` `[n]`."""
    device = positions.device
    num_frames = layout.num_frames
    tracks = torch.empty(num_frames, len(layers), 2, device=device)
    frames = frames.to(device)
    layers_device = layers.to(device)
    on_background = torch.nonzero(layers_device == 0).flatten()
    if len(on_background):
        texture = apply_homography(
            layout.frame_to_background[scene, frames[on_background]], positions[on_background]
        )
        tracks[:, on_background] = apply_homography(
            layout.background_to_frame[scene][:, None], texture[None]
        )
    size = layout.foreground.shape[-1]
    to_grid = texture_normalisation(size, size, positions)
    from_grid = torch.linalg.inv(to_grid)
    for layer in torch.unique(layers).tolist():
        if layer == 0:
            continue
        slot = layer - 1
        members = torch.nonzero(layers_device == layer).flatten()
        member_frames = frames[members]
        grid = apply_homography(
            to_grid @ layout.frame_to_foreground[scene, slot, member_frames], positions[members]
        )  # [m, 2]
        slot_fields = fields[slot : slot + 1]  # [1, T, 2, G, G]
        at_sample = slot_fields[:, member_frames].transpose(0, 1)  # [m, 1, 2, G, G]
        canonical = grid + sample_displacement(at_sample, grid[:, None, None])[:, 0, 0]
        undeformed = invert_deformation(
            slot_fields, canonical[None, None].expand(1, num_frames, -1, 2)
        )
        matrices = layout.foreground_to_frame[scene, slot] @ from_grid  # [T, 3, 3]
        tracks[:, members] = apply_homography(matrices[:, None], undeformed[0])
    return tracks


def _visibility(layout, scene, tracks, layers, fields):
    """(visible `[T, n]` bool, coverage `[T, n]`, own alpha `[n]`) of tracked points."""
    height, width = layout.frame_size
    finite = torch.isfinite(tracks).all(dim=-1)
    in_frame = finite & coords.within_pixel_centres(tracks, (width, height))
    safe_tracks = torch.where(finite[..., None], tracks, torch.zeros_like(tracks))
    count = tracks.shape[1]
    own_alpha = torch.ones(count, device=tracks.device)
    coverage = torch.zeros(tracks.shape[:2], device=tracks.device)
    if layout.num_slots:
        alpha = _foreground_alpha(layout, scene, safe_tracks, fields)  # [F, T, n]
        slot_layers = torch.arange(1, layout.num_slots + 1, device=tracks.device)
        layers = layers.to(tracks.device)
        nearer = slot_layers[:, None] > layers[None, :]  # [F, n]
        transmission = torch.prod(1 - alpha * nearer[:, None, :], dim=0)
        coverage = 1 - transmission
        is_own = slot_layers[:, None] == layers[None, :]  # [F, n]
        own_alpha_per_frame = (alpha * is_own[:, None, :]).sum(dim=0)  # [T, n]
        own_alpha = torch.where(layers > 0, own_alpha_per_frame.amax(dim=0), own_alpha)
    visible = in_frame & (coverage < COVERAGE_LIMIT) & (own_alpha >= OWN_ALPHA_MIN)[None]
    return visible, coverage, own_alpha


def _candidates(layout, owner, scene, count, config, generator, fields) -> PointTracks:
    """`count` candidate points of `scene` with their tracks (some may be unusable)."""
    frames = _sample_frames(count, layout.num_frames, generator)
    layers, positions = _sample_pixels(owner, frames, config.background_fraction, generator)
    tracks = _track_points(layout, scene, layers, positions, frames, fields)
    visible, coverage, _ = _visibility(layout, scene, tracks, layers, fields)
    frames = frames.to(tracks.device)
    return PointTracks(
        tracks=tracks,
        visible=visible,
        query_frames=frames,
        layers=layers.to(tracks.device),
        sampled_frames=frames,
        coverage=coverage,
    )


def _first_visible(visible: torch.Tensor) -> torch.Tensor:
    """`[N]` index of the first True of each column of `visible` `[T, N]` (0 if none)."""
    frames = torch.arange(visible.shape[0], device=visible.device)[:, None]
    never = torch.full_like(frames, visible.shape[0])
    return torch.where(visible, frames, never).amin(dim=0).clamp(max=visible.shape[0] - 1)


def _random_visible_frame(visible: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`[n]` a uniformly random visible frame of each column of `visible` `[T, n]`
    (every column must have one)."""
    keys = torch.rand(visible.shape, generator=generator).to(visible.device)
    return torch.where(visible, keys, -1.0).argmax(dim=0)


def sample_tracks(
    layout: SceneLayout,
    owner: torch.Tensor,
    scene: int,
    config: SceneConfig,
    generator: torch.Generator,
    max_attempts: int = 4,
) -> PointTracks:
    """`config.num_points` ground-truth tracks of scene `scene` of a rendered layout.

    owner: `[B, T, H, W]` from `render_layout`. Candidates not visible where they were drawn
    (edge cases: jitter off the layer, partial coverage) are discarded; if too few remain after
    `max_attempts` rounds, valid points are repeated.
    """
    wanted = config.num_points
    fields = frame_fields(layout.deform_fields[scene], layout.deform_coefficients[scene])
    kept: list[PointTracks] = []
    found = 0
    for _ in range(max_attempts):
        candidates = _candidates(
            layout, owner[scene], scene, wanted + wanted // 2 + 16, config, generator, fields
        )
        point_index = torch.arange(candidates.tracks.shape[1], device=candidates.tracks.device)
        usable = candidates.visible[candidates.sampled_frames, point_index]
        kept.append(candidates.select(torch.nonzero(usable).flatten()))
        found += int(usable.sum())
        if found >= wanted:
            break
    points = PointTracks.concatenate(kept)
    if found == 0:
        raise RuntimeError("the scene engine found no visible point (this is a bug)")
    if found >= wanted:
        points = points.select(torch.arange(wanted, device=points.tracks.device))
    else:
        repeat = torch.randint(found, (wanted - found,), generator=generator)
        index = torch.cat([torch.arange(found), repeat]).to(points.tracks.device)
        points = points.select(index)
    if config.query_at_first_visible:
        points.query_frames = _first_visible(points.visible)
    restarts = round(config.restart_fraction * wanted)
    if restarts:
        chosen = torch.randperm(wanted, generator=generator)[:restarts]
        points.query_frames[chosen.to(points.query_frames.device)] = _random_visible_frame(
            points.visible[:, chosen.to(points.visible.device)], generator
        )
    limit = 4.0 * max(layout.frame_size)
    points.tracks = torch.nan_to_num(points.tracks, nan=0.0).clamp(-limit, limit)
    return points
