"""Tiny generated TAP-Vid videos with exact ground truth, for tests and smoke runs.

Each video is a smooth random colour texture moved by a per-video affine motion (translation,
and optionally slow rotation and zoom), with an optional flat grey occluder sliding across.
Ground truth follows the texture exactly: a point is occluded when the occluder covers it or it
leaves the frame. Not a benchmark of tracking quality (no lighting, no non-rigid motion), but
enough to check the harness end to end and that a flow tracker beats holding points still.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taptr import coords


@dataclass
class ToyMotion:
    """Per-frame motion of the texture: velocity (px/frame), rotation (rad/frame), zoom/frame."""

    velocity: tuple[float, float]
    rotation: float = 0.0
    zoom: float = 0.0


def _texture(rng: np.random.Generator, width: int, height: int, blur: float) -> np.ndarray:
    """Smooth random RGB texture, uint8 [height, width, 3], using the full 0..255 range."""
    import cv2

    noise = rng.random((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=blur)
    low, high = smooth.min(axis=(0, 1)), smooth.max(axis=(0, 1))
    return np.clip((smooth - low) / (high - low + 1e-6) * 255.0, 0, 255).astype(np.uint8)


def _affine(motion: ToyMotion, frame: int, centre: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """2x3 matrix: texture pixel -> frame pixel at `frame` (rotation/zoom about the centre)."""
    angle, scale = motion.rotation * frame, 1.0 + motion.zoom * frame
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = centre + np.asarray(motion.velocity) * frame - rotation @ (origin + centre)
    return np.concatenate([rotation, shift[:, None]], axis=1)


def make_toy_video(
    rng: np.random.Generator,
    num_frames: int,
    size: tuple[int, int],
    num_points: int,
    motion: ToyMotion,
    occluder: bool = True,
    blur: float = 2.0,
) -> dict[str, np.ndarray]:
    """One TAP-Vid entry: {"video": uint8 [T, H, W, 3], "points": float32 [N, T, 2] normalised,
    "occluded": bool [N, T]}. size is (W, H)."""
    import cv2

    width, height = size
    margin = int(max(width, height) * 0.75)
    texture = _texture(rng, width + 2 * margin, height + 2 * margin, blur)
    origin = np.array([margin, margin], dtype=np.float64)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    # Points sampled inside frame 0, away from its border, in texture pixels.
    start = rng.uniform([2, 2], [width - 3, height - 3], size=(num_points, 2))
    texture_points = start + origin

    frames, tracks = [], []
    for frame in range(num_frames):
        matrix = _affine(motion, frame, centre, origin)
        frames.append(
            cv2.warpAffine(texture, matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
        )
        tracks.append(texture_points @ matrix[:, :2].T + matrix[:, 2])
    video = np.stack(frames)
    tracks = np.stack(tracks, axis=1)  # [N, T, 2] pixels
    x, y = tracks[..., 0], tracks[..., 1]
    occluded = ~coords.on_image(tracks, (width, height))

    if occluder:
        box = np.array([width / 4, height / 4])
        box_start = np.array([-box[0], rng.uniform(0, height - box[1])])
        box_velocity = np.array([(width + box[0]) / max(num_frames - 1, 1), 0.0])
        for frame in range(num_frames):
            left, top = box_start + box_velocity * frame
            x0, y0 = int(round(left)), int(round(top))
            x1, y1 = x0 + int(box[0]), y0 + int(box[1])
            video[frame, max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 128
            occluded[:, frame] |= coords.in_pixel_box(
                np.stack([x[:, frame], y[:, frame]], -1), (x0, y0, x1, y1))
    points = coords.pixel_to_tapvid(tracks, (width, height)).astype(np.float32)
    return {"video": video, "points": points, "occluded": occluded}


def make_toy_videos(
    num_videos: int = 2,
    num_frames: int = 12,
    size: tuple[int, int] = (64, 64),
    num_points: int = 8,
    seed: int = 0,
    max_speed: float = 1.5,
    affine: bool = True,
    occluder: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """`num_videos` toy videos named 'toy_000', ... (input for `write_tapvid_pickle`).

    max_speed: largest translation in pixels/frame; affine adds rotation (up to ~0.6 deg/frame)
    and zoom (up to 0.4 %/frame).
    """
    rng = np.random.default_rng(seed)
    videos = {}
    for index in range(num_videos):
        motion = ToyMotion(
            velocity=tuple(rng.uniform(-max_speed, max_speed, size=2)),
            rotation=float(rng.uniform(-0.01, 0.01)) if affine else 0.0,
            zoom=float(rng.uniform(-0.004, 0.004)) if affine else 0.0,
        )
        videos[f"toy_{index:03d}"] = make_toy_video(
            rng, num_frames, size, num_points, motion, occluder=occluder
        )
    return videos
