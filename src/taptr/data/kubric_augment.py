"""The official TAPTRv2 / CoTracker Kubric augmentations (docs/data.md, section 3), on NumPy
arrays.

Every function takes and returns a `Clip` (frames uint8 `[T, H, W, 3]`, tracks float32
`[T, N, 2]` pixel (x, y) with centres at integers, visible bool `[T, N]`) and draws from a
`numpy.random.Generator`. Pixel constants of the official code (tuned for 512 x 512 frames:
eraser sizes, padding, crop jitter) are scaled by min(H, W) / 512.

Deliberate differences from the official code (docs/data.md, section 3): point coordinates are
rescaled with half-pixel centres, x' = (x + 0.5) * W' / W - 0.5 (the way cv2 resizes images),
and points leaving the frame vertically are flagged in the photometric step too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from taptr import coords

REFERENCE_SIZE = 512.0  # the frame size the official constants are tuned for


@dataclass
class Clip:
    """A clip being augmented: frames uint8 `[T, H, W, 3]`, tracks float32 `[T, N, 2]`,
    visible bool `[T, N]`."""

    frames: np.ndarray
    tracks: np.ndarray
    visible: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def _pixel_scale(clip: Clip) -> float:
    return min(clip.size) / REFERENCE_SIZE


# ------------------------------------------------------------------------------ photometric


def color_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.25 / 3.14,
) -> np.ndarray:
    """Random brightness, contrast, saturation and hue changes in random order (like
    torchvision's ColorJitter). image: uint8 `[H, W, 3]` RGB; hue is a fraction of a turn."""
    result = image.astype(np.float32) / 255.0
    factors = {
        "brightness": rng.uniform(1 - brightness, 1 + brightness),
        "contrast": rng.uniform(1 - contrast, 1 + contrast),
        "saturation": rng.uniform(1 - saturation, 1 + saturation),
        "hue": rng.uniform(-hue, hue),
    }
    for name in rng.permutation(list(factors)):
        factor = factors[name]
        if name == "brightness":
            result = result * factor
        elif name == "contrast":
            grey_mean = cv2.cvtColor(result, cv2.COLOR_RGB2GRAY).mean()
            result = (result - grey_mean) * factor + grey_mean
        elif name == "saturation":
            grey = cv2.cvtColor(result, cv2.COLOR_RGB2GRAY)[..., None]
            result = (result - grey) * factor + grey
        else:
            hsv = cv2.cvtColor(result, cv2.COLOR_RGB2HSV)  # float: hue in degrees
            hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * factor, 360.0)
            result = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        result = np.clip(result, 0.0, 1.0)
    return np.round(result * 255.0).astype(np.uint8)


def _random_box(rng, height: int, width: int, scale: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a box with sides in [2, 100) * scale and a random centre."""
    low, high = max(1, round(2 * scale)), max(2, round(100 * scale))
    centre_x, centre_y = rng.integers(0, width), rng.integers(0, height)
    half_width, half_height = rng.integers(low, high) / 2, rng.integers(low, high) / 2
    x0 = int(np.clip(centre_x - half_width, 0, width - 1))
    x1 = int(np.clip(centre_x + half_width, 0, width - 1))
    y0 = int(np.clip(centre_y - half_height, 0, height - 1))
    y1 = int(np.clip(centre_y + half_height, 0, height - 1))
    return x0, y0, x1, y1


def _painted(points: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """bool `[N]`: points `[N, 2]` on the pixels of box (x0, y0, x1, y1), ends inclusive (the
    region `frames[t, y0 : y1 + 1, x0 : x1 + 1]` painted over)."""
    x0, y0, x1, y1 = box
    return coords.in_pixel_box(points, (x0, y0, x1 + 1, y1 + 1))


def eraser(clip: Clip, rng: np.random.Generator, probability: float = 0.5) -> Clip:
    """On each frame t >= 1 with `probability`: 1-10 boxes filled with their mean colour;
    points inside become not visible."""
    frames, visible = clip.frames.copy(), clip.visible.copy()
    height, width = clip.size
    scale = _pixel_scale(clip)
    for t in range(1, len(frames)):
        if rng.random() >= probability:
            continue
        for _ in range(rng.integers(1, 11)):
            x0, y0, x1, y1 = box = _random_box(rng, height, width, scale)
            patch = frames[t, y0 : y1 + 1, x0 : x1 + 1]
            patch[...] = patch.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
            visible[t] &= ~_painted(clip.tracks[t], box)
    return replace(clip, frames=frames, visible=visible)


def replace_patches(clip: Clip, rng: np.random.Generator, probability: float = 0.5) -> Clip:
    """On each frame t >= 1 with `probability`: 1-10 boxes copied (same place) from a random
    frame of a doubly colour-jittered copy of the clip; points inside become not visible."""
    frames, visible = clip.frames.copy(), clip.visible.copy()
    height, width = clip.size
    scale = _pixel_scale(clip)
    alternative = None
    for t in range(1, len(frames)):
        if rng.random() >= probability:
            continue
        if alternative is None:
            alternative = np.stack(
                [color_jitter(color_jitter(frame, rng), rng) for frame in clip.frames]
            )
        for _ in range(rng.integers(1, 11)):
            x0, y0, x1, y1 = box = _random_box(rng, height, width, scale)
            source = rng.integers(0, len(frames))
            frames[t, y0 : y1 + 1, x0 : x1 + 1] = alternative[source, y0 : y1 + 1, x0 : x1 + 1]
            visible[t] &= ~_painted(clip.tracks[t], box)
    return replace(clip, frames=frames, visible=visible)


def jitter_colours(clip: Clip, rng: np.random.Generator, probability: float = 0.25) -> Clip:
    """With `probability`, an independent colour jitter on every frame."""
    if rng.random() >= probability:
        return clip
    return replace(clip, frames=np.stack([color_jitter(frame, rng) for frame in clip.frames]))


def blur_frames(clip: Clip, rng: np.random.Generator, probability: float = 0.25) -> Clip:
    """With `probability`, a Gaussian blur (kernel 11, sigma U(0.1, 2)) on every frame."""
    if rng.random() >= probability:
        return clip
    blurred = [
        cv2.GaussianBlur(frame, (11, 11), sigmaX=float(rng.uniform(0.1, 2.0)))
        for frame in clip.frames
    ]
    return replace(clip, frames=np.stack(blurred))


def photometric(clip: Clip, rng: np.random.Generator) -> Clip:
    """The official photometric augmentation: eraser, replace, colour jitter, blur; then
    points outside the frame are flagged not visible."""
    clip = eraser(clip, rng)
    clip = replace_patches(clip, rng)
    clip = jitter_colours(clip, rng)
    clip = blur_frames(clip, rng)
    height, width = clip.size
    return replace(clip, visible=clip.visible & coords.within_pixel_centres(clip.tracks, (width, height)))


# ----------------------------------------------------------------------------------- panning


def _smoothed_walk(rng, num_frames: int, first_draw, later_draw, keep: float = 0.8) -> list:
    """Per-frame steps of a smoothed random walk: 0 at frame 0, `first_draw()` at frame 1,
    then keep * previous + (1 - keep) * later_draw()."""
    steps, step = [], 0.0
    for t in range(num_frames):
        if t == 1:
            step = first_draw()
        elif t > 1:
            step = keep * step + (1 - keep) * later_draw()
        steps.append(step)
    return steps


def camera_panning(
    clip: Clip,
    rng: np.random.Generator,
    crop_size: tuple[int, int],
    pad: int = 24,
    scale_range: tuple[float, float] = (0.75, 1.25),
    scale_jitter: float = 0.05,
    max_offset: int = 15,
) -> Clip:
    """Temporal camera panning and zoom (PIPs / CoTracker style), then a `crop_size` crop.

    Zero padding of 0..pad px per side; a base scale U(scale_range) with a smoothed per-frame
    random walk of +-scale_jitter in x and y, pulled toward isotropy, clipped to [0.2, 2], and
    each frame kept at least crop + 10 px; a crop centred on the mean of the points visible in
    frame 0, moving by a smoothed random walk of +-max_offset px. Points outside the crop
    become not visible. Pixel constants are scaled by min(H, W) / 512.
    """
    pixel_scale = _pixel_scale(clip)
    pad_px = max(0, round(pad * pixel_scale))
    offset_px = max(1, round(max_offset * pixel_scale))
    margin = max(1, round(10 * pixel_scale))
    crop_height, crop_width = crop_size
    pads = rng.integers(0, pad_px + 1, size=4) if pad_px else np.zeros(4, dtype=int)
    left, right, top, bottom = (int(p) for p in pads)
    frames = np.pad(clip.frames, ((0, 0), (top, bottom), (left, right), (0, 0)))
    tracks = clip.tracks + np.array([left, top], dtype=np.float32)
    num_frames, height, width = frames.shape[:3]

    base = rng.uniform(*scale_range)
    scale_x = scale_y = base
    delta_x = delta_y = 0.0
    resized_frames, resized_tracks = [], np.empty_like(tracks)
    for t in range(num_frames):
        if t == 1:
            delta_x, delta_y = rng.uniform(-scale_jitter, scale_jitter, size=2)
        elif t > 1:
            delta_x = 0.8 * delta_x + 0.2 * rng.uniform(-scale_jitter, scale_jitter)
            delta_y = 0.8 * delta_y + 0.2 * rng.uniform(-scale_jitter, scale_jitter)
        scale_x, scale_y = scale_x + delta_x, scale_y + delta_y
        mean = (scale_x + scale_y) / 2
        scale_x, scale_y = (scale_x + mean) / 2, (scale_y + mean) / 2
        scale_x, scale_y = float(np.clip(scale_x, 0.2, 2.0)), float(np.clip(scale_y, 0.2, 2.0))
        new_height = max(int(height * scale_y), crop_height + margin)
        new_width = max(int(width * scale_x), crop_width + margin)
        resized_frames.append(
            cv2.resize(frames[t], (new_width, new_height), interpolation=cv2.INTER_LINEAR)
        )
        resized_tracks[t] = coords.pixel_to_input(tracks[t], (width, height),
                                                  (new_width, new_height))

    visible_first = clip.visible[0]
    if visible_first.any():
        centre = resized_tracks[0, visible_first].mean(axis=0)
    else:
        centre = np.array([resized_frames[0].shape[1] / 2, resized_frames[0].shape[0] / 2])
    x0 = int(centre[0] - crop_width / 2)
    y0 = int(centre[1] - crop_height / 2)
    offset_x = offset_y = 0
    out_frames = np.empty((num_frames, crop_height, crop_width, 3), dtype=np.uint8)
    out_tracks = np.empty_like(resized_tracks)
    for t in range(num_frames):
        if t == 1:
            offset_x, offset_y = rng.integers(-offset_px, offset_px + 1, size=2)
        elif t > 1:
            offset_x = int(0.8 * offset_x + 0.2 * rng.integers(-offset_px, offset_px + 1))
            offset_y = int(0.8 * offset_y + 0.2 * rng.integers(-offset_px, offset_px + 1))
        frame_height, frame_width = resized_frames[t].shape[:2]
        x0 = int(np.clip(x0 + offset_x, 0, frame_width - crop_width))
        y0 = int(np.clip(y0 + offset_y, 0, frame_height - crop_height))
        out_frames[t] = resized_frames[t][y0 : y0 + crop_height, x0 : x0 + crop_width]
        out_tracks[t] = resized_tracks[t] - np.array([x0, y0], dtype=np.float32)
    visible = clip.visible & coords.within_pixel_centres(out_tracks, (crop_width, crop_height))
    return Clip(out_frames, out_tracks, visible)


# ------------------------------------------------------------------------ flips and resize


def flips(clip: Clip, rng: np.random.Generator, probability: float = 0.5) -> Clip:
    """Flip the whole clip horizontally (x -> W-1-x) and vertically (y -> H-1-y), each with
    `probability`."""
    frames, tracks = clip.frames, clip.tracks.copy()
    height, width = clip.size
    if rng.random() < probability:
        frames = frames[:, :, ::-1]
        tracks[..., 0] = width - 1 - tracks[..., 0]
    if rng.random() < probability:
        frames = frames[:, ::-1]
        tracks[..., 1] = height - 1 - tracks[..., 1]
    return replace(clip, frames=np.ascontiguousarray(frames), tracks=tracks)


def resize_clip(clip: Clip, size: tuple[int, int]) -> Clip:
    """Resize every frame to `size` (H, W) (area filter when shrinking) and map the points."""
    height, width = clip.size
    new_height, new_width = size
    if (height, width) == (new_height, new_width):
        return clip
    shrinking = new_height * new_width < height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    frames = np.stack(
        [
            cv2.resize(frame, (new_width, new_height), interpolation=interpolation)
            for frame in clip.frames
        ]
    )
    tracks = coords.pixel_to_input(clip.tracks, (width, height), (new_width, new_height))
    visible = clip.visible & coords.within_pixel_centres(tracks, (new_width, new_height))
    return Clip(frames, tracks.astype(np.float32), visible)


# --------------------------------------------------------------------------------- restarts


def first_visible_frames(visible: np.ndarray) -> np.ndarray:
    """int64 `[N]`: each point's first visible frame (T - 1 if never visible)."""
    num_frames = visible.shape[0]
    return np.where(visible.any(axis=0), visible.argmax(axis=0), num_frames - 1).astype(np.int64)


def restart_trajectories(
    visible: np.ndarray, rng: np.random.Generator, fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """The official trajectory restarts.

    N * fraction points (N // 4 officially) among those visible somewhere get a new start
    frame drawn uniformly among their visible frames; they become not visible before it.
    Returns (visible `[T, N]`, start frames `[N]`).
    """
    visible = visible.copy()
    starts = first_visible_frames(visible)
    candidates = np.flatnonzero(visible.any(axis=0))
    count = min(len(candidates), int(visible.shape[1] * fraction))
    for point in rng.permutation(candidates)[:count]:
        frames = np.flatnonzero(visible[:, point])
        start = int(rng.choice(frames))
        visible[:start, point] = False
        starts[point] = start
    return visible, starts
