"""Every coordinate conversion of the project, in one place.

Conventions (docs/conventions.md, section 1: pixel centres at integers):
- pixel: (x, y) in the original video, centre of the top-left pixel at (0, 0).
- input pixel: the same point in the resized network input of size (W_in, H_in), mapped with
  half-pixel centres: x_in = (x + 0.5) * W_in / W - 0.5 (what `F.interpolate(...,
  align_corners=False)` and every standard image resize do).
- model: normalised the official (align-corners) way, u = x_in / (W_in - 1).
- tapvid: TAP-Vid pickles, u = (x + 0.5) / W, (0, 0) the top-left corner of the image.
- metric: pixels of a 256x256 frame with corner origin, x256 = (x + 0.5) * 256 / W.

All functions take and return arrays/tensors `[..., 2]` holding (x, y) and work with both
NumPy and PyTorch.
"""

from __future__ import annotations

from typing import NamedTuple


class FrameSize(NamedTuple):
    """A video frame's size in pixels, (width, height) as in "640x480": what every video-facing
    API takes and returns (`VideoSource.size`, `TrackResult.video_size`, the `video_size` of the
    functions below). Array-facing sizes (`ModelConfig.input_size`, `SceneConfig.size`) are
    (height, width), like array shapes (docs/conventions.md, section 3)."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def _size_vector(like, width: float, height: float):
    """(width, height) as an array/tensor matching `like`'s library, dtype and device."""
    try:
        import torch

        if isinstance(like, torch.Tensor):
            return torch.tensor([width, height], dtype=like.dtype, device=like.device)
    except ImportError:  # pragma: no cover
        pass
    import numpy as np

    return np.asarray([width, height], dtype=getattr(like, "dtype", np.float64))


def pixel_to_input(points, video_size, input_size):
    """Original-video pixels -> network-input pixels.

    points: [..., 2] (x, y). video_size: (W, H). input_size: (W_in, H_in).
    """
    scale = _size_vector(points, input_size[0] / video_size[0], input_size[1] / video_size[1])
    return (points + 0.5) * scale - 0.5


def input_to_pixel(points, video_size, input_size):
    """Network-input pixels -> original-video pixels (inverse of `pixel_to_input`)."""
    scale = _size_vector(points, video_size[0] / input_size[0], video_size[1] / input_size[1])
    return (points + 0.5) * scale - 0.5


def input_to_model(points, input_size):
    """Network-input pixels -> model coordinates u = x_in / (W_in - 1)."""
    return points / _size_vector(points, max(input_size[0] - 1, 1), max(input_size[1] - 1, 1))


def model_to_input(points, input_size):
    """Model coordinates -> network-input pixels."""
    return points * _size_vector(points, max(input_size[0] - 1, 1), max(input_size[1] - 1, 1))


def pixel_to_model(points, video_size, input_size):
    """Original-video pixels -> model coordinates. Sizes are (W, H)."""
    return input_to_model(pixel_to_input(points, video_size, input_size), input_size)


def model_to_pixel(points, video_size, input_size):
    """Model coordinates -> original-video pixels. Sizes are (W, H)."""
    return input_to_pixel(model_to_input(points, input_size), video_size, input_size)


def tapvid_to_pixel(points, video_size):
    """TAP-Vid normalised (corner origin) -> pixels with centres at integers."""
    return points * _size_vector(points, video_size[0], video_size[1]) - 0.5


def pixel_to_tapvid(points, video_size):
    """Pixels with centres at integers -> TAP-Vid normalised (corner origin)."""
    return (points + 0.5) / _size_vector(points, video_size[0], video_size[1])


def pixel_to_metric(points, video_size, metric_size: float = 256.0):
    """Pixels -> the 256x256 metric frame of TAP-Vid (corner origin), as tapnet scores."""
    return (points + 0.5) * _size_vector(
        points, metric_size / video_size[0], metric_size / video_size[1]
    )


def tapvid_to_metric(points, metric_size: float = 256.0):
    """TAP-Vid normalised (corner origin) -> the metric frame: u * 256, as tapnet's readers do.

    With `metric_size=255` this is the CoTracker / official TAPTR scaling (u * (256 - 1)).
    """
    return points * metric_size


def tapvid_to_pixel_aligned(points, video_size):
    """TAP-Vid normalised -> pixels by the align-corners rule x = u * (W - 1).

    The "scale 255" evaluation protocol (CoTracker, official TAPTR) hands trackers queries made
    this way instead of with `tapvid_to_pixel`; it differs from ours by up to half a pixel.
    """
    return points * _size_vector(points, max(video_size[0] - 1, 1), max(video_size[1] - 1, 1))


def pixel_aligned_to_metric(points, video_size, metric_size: float = 255.0):
    """Inverse of `tapvid_to_pixel_aligned` followed by `tapvid_to_metric(metric_size)`.

    x_metric = x * metric_size / (W - 1): the scale-255 protocol's rescaling of predictions.
    """
    return points * _size_vector(
        points,
        metric_size / max(video_size[0] - 1, 1),
        metric_size / max(video_size[1] - 1, 1),
    )


# ---------------------------------------------------------------------------------------------
# "Inside the frame": three named rules, each used wherever that question is asked.
# Pixel centres are at integers, so pixel (i, j) covers [i - 0.5, i + 0.5) x [j - 0.5, j + 0.5).

def on_image(points, size):
    """bool `[...]`: (x, y) pixels lie on the image area, -0.5 <= x <= W - 0.5 and
    -0.5 <= y <= H - 0.5 (edges included). size: (W, H).

    The rule for user input (queries, `taptr.queries`) and for classical trackers' results.
    """
    x, y = points[..., 0], points[..., 1]
    width, height = size
    return (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def within_pixel_centres(points, size):
    """bool `[...]`: (x, y) pixels lie between the outermost pixel centres, 0 <= x <= W - 1 and
    0 <= y <= H - 1. size: (W, H). NaN is outside.

    The rule for ground-truth visibility of generated and Kubric clips; in model coordinates it
    is `in_unit_square` (u = x_in / (W_in - 1)).
    """
    x, y = points[..., 0], points[..., 1]
    width, height = size
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def in_unit_square(points):
    """bool `[...]`: model coordinates (u, v) both in [0, 1] (`within_pixel_centres` of the
    network input). The rule for the training loss's position mask."""
    return (points[..., 0] >= 0) & (points[..., 0] <= 1) & (points[..., 1] >= 0) & (
        points[..., 1] <= 1)


def in_pixel_box(points, box):
    """bool `[...]`: (x, y) pixels fall on the pixels of box (x0, y0, x1, y1), the half-open
    pixel ranges [x0, x1) x [y0, y1) (numpy slicing `image[y0:y1, x0:x1]`), that is
    x0 - 0.5 <= x < x1 - 0.5. The rule for points covered by a painted rectangle."""
    x0, y0, x1, y1 = box
    x, y = points[..., 0], points[..., 1]
    return (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)
