"""Drawing tracks on frames.

Each point gets its own colour from where it starts (its query position): hue varies with x and
saturation/brightness with y, so neighbouring points look alike and distant ones differ, and
the colours stay the same from frame to frame. Visible points are filled discs, occluded ones
hollow rings (or hidden), trails show the last `trail` frames, and a cross marks each query at
its query frame.

`draw_tracks(frames, result)` draws lazily: give it an iterator of frames and it yields drawn
frames one at a time (what `TrackResult.save_overlay` and the CLI use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np

from taptr import coords
from taptr.errors import TaptrError
from taptr.text import count

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_SCALE = 1 << _SHIFT
OCCLUDED_STYLES = ("hollow", "hidden")


@dataclass
class OverlayStyle:
    """How tracks are drawn.

    trail: frames of history drawn as a line (0 = none, -1 = the whole past).
    occluded: "hollow" (ring) or "hidden".
    radius, thickness: in pixels; None = from the frame size.
    query_marker_frames: a cross marks a query for this many frames from its query frame
    (0 = never).
    """

    trail: int = 12
    occluded: str = "hollow"
    radius: float | None = None
    thickness: int | None = None
    query_marker_frames: int = 10

    def __post_init__(self) -> None:
        if self.occluded not in OCCLUDED_STYLES:
            raise TaptrError(f"occluded must be one of {OCCLUDED_STYLES}, got {self.occluded!r}")
        if self.trail < -1:
            raise TaptrError(f"trail must be -1 (all), 0 or a number of frames, got {self.trail}")


def point_colors(points: np.ndarray, video_size: tuple[int, int]) -> np.ndarray:
    """Colours by position: `[N, 2]` (x, y) pixels -> `[N, 3]` uint8 RGB.

    hue = x / W over 0..300 degrees (red to magenta, so left and right edges differ),
    saturation 1 -> 0.55 and value 1 -> 0.8 from top to bottom.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    u, v = np.clip(coords.pixel_to_tapvid(points, video_size), 0.0, 1.0).T  # corner-origin [0, 1]
    return _hsv_to_rgb(u * 300.0 / 360.0, 1.0 - 0.45 * v, 1.0 - 0.2 * v)


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in 0..1) -> uint8 RGB `[N, 3]`."""
    sector = np.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    sector = sector.astype(int) % 6
    red = np.choose(sector, [value, q, p, p, t, value])
    green = np.choose(sector, [t, value, value, q, p, p])
    blue = np.choose(sector, [p, p, t, value, value, q])
    return np.clip(np.rint(np.stack([red, green, blue], 1) * 255), 0, 255).astype(np.uint8)


def draw_frame(frame: np.ndarray, index: int, tracks: np.ndarray, visible: np.ndarray,
               queries: np.ndarray, colors: np.ndarray, style: OverlayStyle,
               tracked_before_query: bool = True) -> np.ndarray:
    """Draw frame `index` of the tracks on a copy of `frame` `[H, W, 3]` uint8.

    tracks [N, T, 2], visible [N, T], queries [N, 3], colors [N, 3] uint8.
    With `tracked_before_query=False` (forward-only results) points are not drawn before their
    query frame.
    """
    canvas = np.ascontiguousarray(frame, dtype=np.uint8).copy()
    height, width = canvas.shape[:2]
    radius = style.radius if style.radius is not None else max(2.0, min(height, width) / 120.0)
    thickness = style.thickness or max(1, int(round(radius / 2.5)))
    query_frames = np.rint(queries[:, 0]).astype(int)
    active = np.ones(len(tracks), bool) if tracked_before_query else query_frames <= index
    if style.trail:
        _draw_trails(canvas, index, tracks, visible, colors, active, style.trail, thickness)
    for point in np.flatnonzero(active):
        center = _fixed(tracks[point, index])
        if center is None:
            continue
        color = tuple(int(c) for c in colors[point])
        if visible[point, index]:
            cv2.circle(canvas, center, int(radius * _SCALE), color, -1, cv2.LINE_AA, _SHIFT)
        elif style.occluded == "hollow":
            cv2.circle(canvas, center, int(radius * _SCALE), color, thickness, cv2.LINE_AA, _SHIFT)
    if style.query_marker_frames:
        marking = (query_frames <= index) & (index < query_frames + style.query_marker_frames)
        for point in np.flatnonzero(marking):
            _draw_cross(canvas, queries[point, 1:], tuple(int(c) for c in colors[point]),
                        radius * 2.5, thickness)
    return canvas


def _draw_trails(canvas, index, tracks, visible, colors, active, trail, thickness) -> None:
    first = 0 if trail < 0 else max(0, index - trail)
    for point in np.flatnonzero(active):
        color = tuple(int(c) for c in colors[point])
        for frame in range(first + 1, index + 1):
            if not (visible[point, frame - 1] and visible[point, frame]):
                continue
            start, end = _fixed(tracks[point, frame - 1]), _fixed(tracks[point, frame])
            if start is not None and end is not None:
                cv2.line(canvas, start, end, color, thickness, cv2.LINE_AA, _SHIFT)


def _draw_cross(canvas, position, color, size, thickness) -> None:
    x, y = float(position[0]), float(position[1])
    for dx, dy in ((size, size), (size, -size)):
        start, end = _fixed((x - dx, y - dy)), _fixed((x + dx, y + dy))
        if start is not None and end is not None:
            cv2.line(canvas, start, end, (255, 255, 255), thickness + 2, cv2.LINE_AA, _SHIFT)
            cv2.line(canvas, start, end, color, thickness, cv2.LINE_AA, _SHIFT)


def _fixed(point) -> tuple[int, int] | None:
    """(x, y) pixels -> OpenCV fixed-point integers; None when not finite or absurdly far."""
    x, y = float(point[0]), float(point[1])
    if not (np.isfinite(x) and np.isfinite(y)) or abs(x) > 1e5 or abs(y) > 1e5:
        return None
    return int(round(x * _SCALE)), int(round(y * _SCALE))


def draw_tracks(frames: Iterable[np.ndarray], result, *, trail: int = 12,
                occluded: str = "hollow", radius: float | None = None,
                thickness: int | None = None, query_marker_frames: int = 10,
                colors: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yield the frames `[H, W, 3]` uint8 with `result`'s tracks drawn on them.

    result: a `TrackResult` (or anything with `tracks [N,T,2]`, `visible [N,T]`,
    `queries [N,3]`). frames: the video's frames in order, e.g. an array `[T, H, W, 3]` or
    `open_video(path).iter_frames()`. colors: `[N, 3]` uint8 RGB, default `point_colors` of
    the queries.
    """
    style = OverlayStyle(trail, occluded, radius, thickness, query_marker_frames)
    tracks = np.asarray(result.tracks, np.float32)
    visible = np.asarray(result.visible, bool)
    queries = np.asarray(result.queries, np.float32)
    tracked_before_query = bool(getattr(result, "backward", True))
    for index, frame in enumerate(frames):
        if index >= tracks.shape[1]:
            raise TaptrError("the video has more frames than the tracks "
                             f"({count(tracks.shape[1], 'frame')})")
        if colors is None:
            height, width = np.asarray(frame).shape[:2]
            colors = point_colors(queries[:, 1:], (width, height))
        yield draw_frame(frame, index, tracks, visible, queries, colors, style,
                         tracked_before_query)
