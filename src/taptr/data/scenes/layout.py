"""What a synthetic scene is made of: layer textures and per-frame transforms.

`sample_layout` draws one scene from a seed (textures, camera path, object paths, depth order,
deformations); `stack_layouts` pads several scenes to the same number of foreground slots so
that the renderer draws them in one batch.

Depth order: the background is layer 0; foreground slot f is layer f + 1; a larger layer index
is nearer to the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from taptr.data.scenes.config import SceneConfig, SceneRanges
from taptr.data.scenes.motion import (
    perspective,
    random_deformation_fields,
    rotation_scale,
    smooth_offsets,
    translation,
    apply_homography,
)
from taptr.data.scenes.procedural import (
    crop_photo,
    place_cutout,
    prefilter_for_minification,
    procedural_texture,
    random_shape_mask,
)
from taptr.data.scenes.textures import TextureLibrary


@dataclass
class SceneLayout:
    """B scenes ready to render, on one device; F = foreground slots (padded per batch).

    Attributes:
        background: `[B, 3, Hb, Wb]` RGB in [0, 1].
        frame_to_background, background_to_frame: `[B, T, 3, 3]` homographies between frame
            pixels and background texture pixels.
        foreground: `[B, F, 4, S, S]` premultiplied RGBA (unused slots are all zero).
        frame_to_foreground, foreground_to_frame: `[B, F, T, 3, 3]`.
        deform_fields: `[B, F, 4, G, G]` two displacement fields per layer (normalised units).
        deform_coefficients: `[B, F, T, 2]` their per-frame weights (zero: rigid layer).
        num_foreground: active foreground slots of each scene (the first ones).
        frame_size: (H, W).
    """

    background: torch.Tensor
    frame_to_background: torch.Tensor
    background_to_frame: torch.Tensor
    foreground: torch.Tensor
    frame_to_foreground: torch.Tensor
    foreground_to_frame: torch.Tensor
    deform_fields: torch.Tensor
    deform_coefficients: torch.Tensor
    num_foreground: list[int]
    frame_size: tuple[int, int]

    @property
    def batch_size(self) -> int:
        return int(self.background.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frame_to_background.shape[1])

    @property
    def num_slots(self) -> int:
        return int(self.foreground.shape[1])

    @property
    def deforming_slots(self) -> list[int]:
        """Foreground slots whose deformation is not zero in some scene of the batch."""
        active = self.deform_coefficients.abs().amax(dim=(0, 2, 3)) > 0
        return [int(slot) for slot in torch.nonzero(active).flatten()]


def _flip(generator: torch.Generator, probability: float) -> bool:
    return bool(torch.rand((), generator=generator) < probability)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _pick(generator: torch.Generator, items: list):
    return items[int(torch.randint(len(items), (), generator=generator))]


def _background_texture(config, library, generator, device) -> torch.Tensor:
    """`[3, Hb, Wb]`: a photo crop or a procedural texture."""
    height, width = config.background_texture_size
    if library.backgrounds and _flip(generator, config.photo_probability):
        image = _pick(generator, library.backgrounds).to(device)
        return crop_photo(image, height, width, generator)
    return procedural_texture(height, width, generator, device)


def _foreground_texture(config, library, generator, device) -> torch.Tensor:
    """`[4, S, S]` premultiplied RGBA: a cut-out, or a random shape filled with a texture."""
    size = config.foreground_texture_size
    if library.cutouts and _flip(generator, config.cutout_probability):
        return place_cutout(_pick(generator, library.cutouts).to(device), size, generator)
    if library.backgrounds and _flip(generator, config.photo_probability):
        fill = crop_photo(_pick(generator, library.backgrounds).to(device), size, size, generator)
    else:
        fill = procedural_texture(size, size, generator, device)
    alpha = random_shape_mask(size, generator, device)
    return torch.cat([fill * alpha, alpha])


def _uniforms(generator: torch.Generator, low: float, high: float, count: int) -> torch.Tensor:
    """`[count]` float64 uniform in [low, high)."""
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def _camera_path(config: SceneConfig, ranges: SceneRanges, generator) -> torch.Tensor:
    """`[T, 3, 3]` float64 frame -> background texture homographies of a smooth camera path."""
    frames = config.num_frames
    height, width = config.size
    texture_height, texture_width = config.background_texture_size
    start = torch.zeros(1, dtype=torch.float64)
    shift = smooth_offsets(
        generator,
        frames,
        start,
        ranges.camera_speed,
        ranges.camera_acceleration,
        ranges.camera_wobble,
        dims=2,
        isotropic=True,
    )[0]
    spin = smooth_offsets(
        generator, frames, start, ranges.camera_spin, ranges.camera_spin / 20, 0.0
    )
    log_zoom = smooth_offsets(generator, frames, start, ranges.camera_log_zoom_speed, 0.0, 0.0)
    start_angle = _uniform(generator, -0.2, 0.2)
    tilt_ends = _uniforms(generator, -1, 1, 4).reshape(2, 2)
    progress = torch.linspace(0, 1, frames, dtype=torch.float64)[:, None]
    tilt = torch.lerp(tilt_ends[0], tilt_ends[1], progress) * ranges.camera_tilt
    tilt = tilt / torch.tensor([width / 2, height / 2], dtype=torch.float64)
    frame_centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64)
    texture_centre = torch.tensor(
        [(texture_width - 1) / 2, (texture_height - 1) / 2], dtype=torch.float64
    )
    zoom = torch.exp(log_zoom[0, :, 0])
    angle = start_angle + spin[0, :, 0]
    return (
        translation(texture_centre + shift)
        @ rotation_scale(angle, zoom, zoom)
        @ perspective(tilt)
        @ translation(-frame_centre.expand(frames, 2))
    )


def _object_paths(
    config: SceneConfig,
    ranges: SceneRanges,
    generator,
    camera_offset: torch.Tensor,
    count: int,
) -> torch.Tensor:
    """`[count, T, 3, 3]` float64 layer texture -> frame homographies of smooth object motions.

    Each object is inside the frame at a random reference frame and moves, spins and scales
    smoothly from there (so it can enter or leave the frame); it also follows the camera's
    motion, more the nearer it is (parallax). camera_offset: `[T, 2]` displacement of the
    background point at the frame centre.
    """
    frames = config.num_frames
    height, width = config.size
    size = config.foreground_texture_size
    reference = _uniforms(generator, 0, frames - 1, count)
    reference_index = reference.round().long().clamp(max=frames - 1)
    centre = _uniforms(generator, 0.1, 0.9, 2 * count).reshape(count, 2)
    centre = centre * torch.tensor([width - 1, height - 1], dtype=torch.float64)
    path = smooth_offsets(
        generator,
        frames,
        reference,
        ranges.object_speed,
        ranges.object_acceleration,
        ranges.object_wobble,
        dims=2,
        isotropic=True,
    )
    parallax = 0.8 + 0.6 * torch.arange(1, count + 1, dtype=torch.float64) / max(count, 1)
    follow = (camera_offset[None] - camera_offset[reference_index][:, None]) * parallax[
        :, None, None
    ]
    spin = smooth_offsets(
        generator,
        frames,
        reference,
        ranges.object_spin,
        ranges.object_spin_acceleration,
        ranges.object_spin_wobble,
    )[..., 0]
    log_scale = smooth_offsets(
        generator,
        frames,
        reference,
        ranges.object_log_scale_speed,
        ranges.object_log_scale_speed / 10,
        0.0,
    )[..., 0].clamp(-ranges.object_log_scale_limit, ranges.object_log_scale_limit)
    object_size = _uniforms(generator, *ranges.object_size, count)
    scale = (object_size / (0.95 * size))[:, None] * torch.exp(log_scale)
    aspect = torch.exp(_uniforms(generator, -0.15, 0.15, count))[:, None]
    angle = _uniforms(generator, 0, 2 * math.pi, count)[:, None] + spin
    texture_centre = torch.full((count, frames, 2), (size - 1) / 2, dtype=torch.float64)
    return (
        translation(centre[:, None] + path + follow)
        @ rotation_scale(angle, scale * aspect, scale / aspect)
        @ translation(-texture_centre)
    )


def _min_scale(layer_to_frame: torch.Tensor) -> float:
    """Smallest screen-pixels-per-texture-pixel factor of affine transforms `[T, 3, 3]`."""
    singular_values = torch.linalg.svdvals(layer_to_frame[:, :2, :2])
    return float(singular_values.amin())


def _deformation(config, ranges, generator, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fields `[count, 4, G, G]` and coefficients `[count, T, 2]` (zero for rigid layers)."""
    fields = random_deformation_fields(count, generator)
    coefficients = torch.zeros(count, config.num_frames, 2)
    time = torch.arange(config.num_frames, dtype=torch.float32)
    for layer in range(count):
        if not _flip(generator, ranges.deform_probability):
            continue
        peak = fields[layer].reshape(2, 2, -1).norm(dim=1).amax(dim=1)  # max |D_k|, [2]
        target = _uniform(generator, 0.3, 1.0) * ranges.deform_displacement
        amplitude = (target / (2 * peak.clamp_min(1e-6))).clamp(max=0.22)  # |c0|+|c1| < 0.45
        period = config.num_frames * (0.5 + 1.5 * torch.rand(2, generator=generator))
        phase = torch.rand(2, generator=generator) * 2 * math.pi
        coefficients[layer] = amplitude * torch.sin(2 * math.pi * time[:, None] / period + phase)
    return fields, coefficients


def sample_layout(
    config: SceneConfig,
    ranges: SceneRanges,
    library: TextureLibrary,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> SceneLayout:
    """Draw one scene (B = 1) from `generator` (a CPU generator, consumed in a fixed order)."""
    count = int(
        torch.randint(config.min_foreground, config.max_foreground + 1, (), generator=generator)
    )
    height, width = config.size
    background = _background_texture(config, library, generator, device)
    frame_to_background = _camera_path(config, ranges, generator)
    background_to_frame = torch.linalg.inv(frame_to_background)
    frame_centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64)
    anchor = apply_homography(frame_to_background[0], frame_centre)
    camera_offset = apply_homography(background_to_frame, anchor) - frame_centre  # [T, 2]
    size = config.foreground_texture_size
    foreground_to_frame = _object_paths(config, ranges, generator, camera_offset, count)
    foreground = torch.zeros(count, 4, size, size, device=device)
    for slot in range(count):
        texture = _foreground_texture(config, library, generator, device)
        foreground[slot] = prefilter_for_minification(
            texture, _min_scale(foreground_to_frame[slot])
        )
    fields, coefficients = _deformation(config, ranges, generator, count)
    frame_to_foreground = torch.linalg.inv(foreground_to_frame) if count else foreground_to_frame

    def on_device(matrices: torch.Tensor) -> torch.Tensor:
        return matrices.float().to(device)[None]

    return SceneLayout(
        background=background[None],
        frame_to_background=on_device(frame_to_background),
        background_to_frame=on_device(background_to_frame),
        foreground=foreground[None],
        frame_to_foreground=on_device(frame_to_foreground),
        foreground_to_frame=on_device(foreground_to_frame),
        deform_fields=fields.to(device)[None],
        deform_coefficients=coefficients.to(device)[None],
        num_foreground=[count],
        frame_size=(height, width),
    )


def _pad_slots(tensor: torch.Tensor, slots: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Pad dim 1 of `tensor` `[1, F, ...]` to `slots` with zeros (or copies of `fill`)."""
    missing = slots - tensor.shape[1]
    if missing == 0:
        return tensor
    if fill is None:
        padding = tensor.new_zeros(1, missing, *tensor.shape[2:])
    else:
        padding = fill.to(tensor).expand(1, missing, *tensor.shape[2:])
    return torch.cat([tensor, padding], dim=1)


def stack_layouts(layouts: list[SceneLayout]) -> SceneLayout:
    """Batch single-scene layouts; unused foreground slots get transparent, static layers."""
    if len(layouts) == 1:
        return layouts[0]
    slots = max(layout.num_slots for layout in layouts)
    identity = torch.eye(3)

    def stacked(name: str, fill=None) -> torch.Tensor:
        return torch.cat([_pad_slots(getattr(layout, name), slots, fill) for layout in layouts])

    return SceneLayout(
        background=torch.cat([layout.background for layout in layouts]),
        frame_to_background=torch.cat([layout.frame_to_background for layout in layouts]),
        background_to_frame=torch.cat([layout.background_to_frame for layout in layouts]),
        foreground=stacked("foreground"),
        frame_to_foreground=stacked("frame_to_foreground", identity),
        foreground_to_frame=stacked("foreground_to_frame", identity),
        deform_fields=stacked("deform_fields"),
        deform_coefficients=stacked("deform_coefficients"),
        num_foreground=[n for layout in layouts for n in layout.num_foreground],
        frame_size=layouts[0].frame_size,
    )
