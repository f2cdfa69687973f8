"""Geometry of the synthetic scenes: homographies, smooth motion paths, elastic deformation.

Coordinate systems (pixel centres at integers everywhere):
* frame pixels (x, y) of the rendered video;
* layer texture pixels (x, y) of a layer's texture image;
* normalised texture coordinates in [-1, 1] (`grid_sample` with `align_corners=False`):
  g = (2 x + 1) / w - 1.

A layer is drawn by mapping each frame pixel through `frame_to_layer[t]` (a 3x3 homography) to
texture pixels q, normalising, and then applying the layer's elastic deformation
s = q + sum_k c_k[t] * D_k(q) (two smooth displacement fields D_k in normalised units, mixed by
per-frame coefficients c_k[t]); the texture is sampled at s. Tracking a texture point s forward
inverts the deformation by fixed-point iteration (a contraction by construction) and maps
through `layer_to_frame[t]`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- homographies


def translation(offsets: torch.Tensor) -> torch.Tensor:
    """Homographies `[..., 3, 3]` translating by offsets `[..., 2]`."""
    matrices = torch.zeros(*offsets.shape[:-1], 3, 3, dtype=offsets.dtype, device=offsets.device)
    matrices[..., 0, 0] = 1
    matrices[..., 1, 1] = 1
    matrices[..., 2, 2] = 1
    matrices[..., :2, 2] = offsets
    return matrices


def rotation_scale(
    angle: torch.Tensor, scale_x: torch.Tensor, scale_y: torch.Tensor
) -> torch.Tensor:
    """Homographies `[..., 3, 3]` = R(angle) @ diag(scale_x, scale_y); inputs `[...]`."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    matrices = torch.zeros(*angle.shape, 3, 3, dtype=angle.dtype, device=angle.device)
    matrices[..., 0, 0] = cos * scale_x
    matrices[..., 0, 1] = -sin * scale_y
    matrices[..., 1, 0] = sin * scale_x
    matrices[..., 1, 1] = cos * scale_y
    matrices[..., 2, 2] = 1
    return matrices


def perspective(tilt: torch.Tensor) -> torch.Tensor:
    """Homographies `[..., 3, 3]` with last row (tilt_x, tilt_y, 1); tilt `[..., 2]`."""
    matrices = translation(torch.zeros_like(tilt))
    matrices[..., 2, :2] = tilt
    return matrices


def apply_homography(matrices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map points `[..., 2]` through homographies `[..., 3, 3]` (broadcast), returns `[..., 2]`."""
    x, y = points[..., 0], points[..., 1]
    denominator = matrices[..., 2, 0] * x + matrices[..., 2, 1] * y + matrices[..., 2, 2]
    mapped_x = matrices[..., 0, 0] * x + matrices[..., 0, 1] * y + matrices[..., 0, 2]
    mapped_y = matrices[..., 1, 0] * x + matrices[..., 1, 1] * y + matrices[..., 1, 2]
    return torch.stack([mapped_x / denominator, mapped_y / denominator], dim=-1)


def homography_grid(
    matrices: torch.Tensor,
    height: int,
    width: int,
    left: int = 0,
    top: int = 0,
    projective: bool = True,
) -> torch.Tensor:
    """Pixel centres of a frame window mapped through `matrices` `[B, T, 3, 3]`.

    The window is rows top..top+height-1 and columns left..left+width-1 of the frame.
    Returns `[B, T, height, width, 2]`. Uses the separable structure (column terms + row terms)
    so it costs one broadcast add per pixel, plus a division unless `projective` is False
    (then the matrices' last rows must be (0, 0, 1)).
    """
    xs = torch.arange(left, left + width, dtype=matrices.dtype, device=matrices.device)
    ys = torch.arange(top, top + height, dtype=matrices.dtype, device=matrices.device)
    column_terms = (matrices[:, :, None, :, 0] * xs[:, None])[:, :, None]  # [B, T, 1, W, 3]
    row_terms = (matrices[:, :, None, :, 1] * ys[:, None] + matrices[:, :, None, :, 2])[
        :, :, :, None
    ]
    if not projective:
        return column_terms[..., :2] + row_terms[..., :2]
    homogeneous = column_terms + row_terms
    return homogeneous[..., :2] / homogeneous[..., 2:]


# ----------------------------------------------------------------- texture normalisation


def to_normalised(points: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Texture pixels (x, y) `[..., 2]` -> grid_sample coordinates (align_corners=False)."""
    scale = points.new_tensor([2.0 / width, 2.0 / height])
    return (points + 0.5) * scale - 1.0


def from_normalised(grid: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """grid_sample coordinates `[..., 2]` -> texture pixels (x, y)."""
    scale = grid.new_tensor([width / 2.0, height / 2.0])
    return (grid + 1.0) * scale - 0.5


# --------------------------------------------------------------------- elastic deformation

DEFORM_GRID_SIZE = 33


def random_deformation_fields(
    count: int, generator: torch.Generator, control_points: int = 4
) -> torch.Tensor:
    """`count` pairs of smooth displacement fields `[count, 4, G, G]` (CPU).

    Channels (0, 1) are field D_0's (dx, dy), channels (2, 3) field D_1's, in normalised
    texture units. Each field is scaled so that its Jacobian's max-abs-row-sum (an upper bound
    on its Lipschitz constant in the max norm) is 1: a deformation with coefficients
    |c_0| + |c_1| < 1 is then invertible by fixed-point iteration.
    """
    control = torch.randn(count * 2, 2, control_points, control_points, generator=generator)
    fields = F.interpolate(
        control, size=(DEFORM_GRID_SIZE, DEFORM_GRID_SIZE), mode="bicubic", align_corners=True
    )
    step = 2.0 / (DEFORM_GRID_SIZE - 1)
    d_dx = (fields[..., :, 1:] - fields[..., :, :-1]).abs().amax(dim=(-2, -1)) / step
    d_dy = (fields[..., 1:, :] - fields[..., :-1, :]).abs().amax(dim=(-2, -1)) / step
    lipschitz = (d_dx + d_dy).amax(dim=1).clamp_min(1e-6)  # [count * 2]
    fields = fields / lipschitz[:, None, None, None]
    return fields.reshape(count, 4, DEFORM_GRID_SIZE, DEFORM_GRID_SIZE)


def frame_fields(fields: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Per-frame displacement fields `[B, T, 2, G, G]` = sum_k coefficients[:, t, k] * D_k.

    fields: `[B, 4, G, G]` (D_0 in channels 0-1, D_1 in 2-3); coefficients: `[B, T, 2]`.
    """
    batch, _, size, _ = fields.shape
    pairs = fields.reshape(batch, 2, 2, size, size)
    return torch.einsum("bkxhw,btk->btxhw", pairs, coefficients)


def sample_displacement(per_frame_fields: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Displacement (normalised units) at normalised points.

    per_frame_fields: `[B, T, 2, G, G]` (see `frame_fields`); grid: `[B, T, ..., 2]`.
    Returns the displacement with the grid's shape. Bilinear, border padding, the fields'
    corners at +-1 (align_corners=True).
    """
    batch, frames, _, size, _ = per_frame_fields.shape
    points = grid.reshape(batch * frames, -1, 1, 2)
    sampled = F.grid_sample(
        per_frame_fields.reshape(batch * frames, 2, size, size),
        points,
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )  # [B*T, 2, P, 1]
    return sampled[..., 0].transpose(1, 2).reshape(grid.shape)


def invert_deformation(
    per_frame_fields: torch.Tensor, deformed: torch.Tensor, iterations: int = 12
) -> torch.Tensor:
    """Solve q + D_t(q) = s for q by fixed-point iteration q <- s - D_t(q).

    per_frame_fields `[B, T, 2, G, G]`, deformed s `[B, T, P, 2]` (normalised).
    Converges geometrically with rate |c_0| + |c_1| (< 0.5 by construction).
    """
    undeformed = deformed.clone()
    for _ in range(iterations):
        undeformed = deformed - sample_displacement(per_frame_fields, undeformed)
    return undeformed


def texture_normalisation(width: int, height: int, like: torch.Tensor) -> torch.Tensor:
    """`[3, 3]` matrix taking texture pixels to grid_sample coordinates (align_corners=False)."""
    return like.new_tensor(
        [[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0, 0, 1]]
    )


# ------------------------------------------------------------------------- smooth paths


def smooth_offsets(
    generator: torch.Generator,
    num_frames: int,
    reference_frames: torch.Tensor,
    max_speed: float,
    max_acceleration: float,
    max_wobble: float,
    dims: int = 1,
    isotropic: bool = False,
) -> torch.Tensor:
    """Smooth random paths `[count, T, dims]` (CPU, float64), path i zero at
    `reference_frames[i]` (`[count]`).

    v * dt + a * dt^2 / 2 + a sinusoidal wobble, with dt = t - reference frame, |v| up to
    `max_speed` per frame, |a| up to `max_acceleration` per frame^2, wobble amplitude up to
    `max_wobble` and period between T/2 and 2T. With `isotropic` (dims = 2) the velocity and
    acceleration have uniformly random directions.
    """
    count = len(reference_frames)
    dt = (
        torch.arange(num_frames, dtype=torch.float64)[None, :, None]
        - reference_frames.double()[:, None, None]
    )

    def uniform(*shape) -> torch.Tensor:
        return torch.rand(count, *shape, generator=generator, dtype=torch.float64)

    def random_vector(magnitude: float) -> torch.Tensor:  # [count, 1, dims]
        if isotropic:
            angle, length = uniform() * 2 * math.pi, uniform() * magnitude
            return (torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1) * length[:, None])[
                :, None
            ]
        return (2 * uniform(1, dims) - 1) * magnitude

    velocity = random_vector(max_speed)
    acceleration = random_vector(max_acceleration)
    wobble_amplitude = uniform(1, dims) * max_wobble
    period = num_frames * (0.5 + 1.5 * uniform(1, dims))
    phase = uniform(1, dims) * 2 * math.pi
    omega = 2 * math.pi / period
    wobble = wobble_amplitude * (torch.sin(omega * dt + phase) - torch.sin(phase))
    return velocity * dt + 0.5 * acceleration * dt**2 + wobble
