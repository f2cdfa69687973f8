"""What the web app does, without the web: open an upload, show a frame with the chosen query
points, track and write the result files. `taptr.app.ui` wires these to Gradio.

Points travel as strings "t,x,y" (frame index, pixel x, y of the original video, pixel
centres at integers), the same format as `taptr track --points`. Every user mistake raises
`TaptrError` with a one-line message, which the page shows as is.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from taptr.app.settings import DEFAULT_MAX_FRAMES
from taptr.errors import TaptrError
from taptr.io import open_video, parse_points, write_video
from taptr.io.video import VideoSource
from taptr.viz import OverlayStyle, draw_frame, point_colors
from taptr.text import count

logger = logging.getLogger(__name__)

MAX_GRID = 50  # 2500 points
TRACK_FILES = ("tracks.csv", "tracks.npz", "tracks.json")
OVERLAY_FILE = "overlay.mp4"
DEMO_FILE = "demo.mp4"


# --------------------------------------------------------------------------- videos

def open_upload(path, max_frames: int | None = DEFAULT_MAX_FRAMES) -> VideoSource:
    """An uploaded video file, refused (`TaptrError`) when it is missing, unreadable or has
    more than `max_frames` frames (None: no limit)."""
    if path is None or str(path) == "":
        raise TaptrError("no video: upload one, or press \"Use the demo clip\"")
    source = _open_cached(str(path))
    if max_frames is not None and source.num_frames > max_frames:
        raise TaptrError(f"the video has {count(source.num_frames, 'frame')}; this app tracks "
                         f"at most {max_frames} (cut the video, or start the app with --max-frames "
                         f"{source.num_frames})")
    return source


@functools.lru_cache(maxsize=8)
def _open_cached(path: str) -> VideoSource:
    # Uploads get unique paths and are never rewritten: moving the frame slider need not
    # re-scan the file each time.
    return open_video(path)


def forget_uploads() -> None:
    """Drop the cached open videos (when the app stops and its files are deleted)."""
    _open_cached.cache_clear()


def describe(source: VideoSource) -> str:
    """"61 frames, 640x272, 25 fps" for the page."""
    width, height = source.size
    rate = f", {source.fps:g} fps" if source.fps else ""
    return f"{count(source.num_frames, 'frame')}, {width}x{height}{rate}"


def read_frame(source: VideoSource, index: int) -> np.ndarray:
    """Frame `index` (clipped to the video) as RGB uint8 `[H, W, 3]`."""
    index = int(min(max(int(index or 0), 0), source.num_frames - 1))
    frame = next(iter(source.iter_frames(index, index + 1)), None)
    if frame is None:
        raise TaptrError(f"cannot read frame {index} of the video")
    return frame


def write_demo_clip(folder: Path) -> Path:
    """The bundled demo clip (`taptr.demo.load_demo_clip`) as an mp4 in `folder`, written once."""
    path = Path(folder) / DEMO_FILE
    if not path.is_file():
        from taptr.demo import load_demo_clip

        clip = load_demo_clip()
        logger.info("demo clip: %s", clip.description)
        write_video(path, clip.frames, clip.fps)
    return path


# --------------------------------------------------------------------------- points

def format_point(t: int, x: float, y: float) -> str:
    """(t, x, y) -> "t,x,y" with no needless decimals."""
    return f"{int(t)},{float(x):g},{float(y):g}"


def point_label(number: int, value: str) -> str:
    """The list entry of point `number` (from 0, as the CSV's `point` column) with value
    "t,x,y"."""
    t, x, y = value.split(",")
    return f"#{number}  frame {t}: ({x}, {y})"


def points_to_queries(values: Sequence[str] | None) -> np.ndarray | None:
    """Point strings "t,x,y" -> `[N, 3]` float32 queries, or None when there are none."""
    values = [value for value in (values or []) if value and value.strip()]
    return parse_points(";".join(values)) if values else None


def draw_queries(frame: np.ndarray, queries: np.ndarray | None, index: int) -> np.ndarray:
    """`frame` `[H, W, 3]` (frame `index` of the video) with the queries `[N, 3]` drawn on it.

    Colours are those of the overlay (`taptr.viz.point_colors`). Points on this frame are
    discs, points on other frames hollow rings; each has a white outline and its number
    (from 0, as in the list of points and the CSV's `point` column).
    """
    if queries is None or not len(queries):
        return frame
    height, width = frame.shape[:2]
    radius = max(4.0, min(height, width) / 60.0)
    on_frame = np.rint(queries[:, 0]) == index
    style = OverlayStyle(trail=0, radius=radius, query_marker_frames=0)
    canvas = draw_frame(frame, 0, queries[:, None, 1:], on_frame[:, None], queries,
                        point_colors(queries[:, 1:], (width, height)), style)
    scale = max(0.5, radius / 8.0)
    for number, (x, y) in enumerate(queries[:, 1:]):
        center = (int(round(x)), int(round(y)))
        cv2.circle(canvas, center, int(round(radius)) + 1, (255, 255, 255), 1, cv2.LINE_AA)
        corner = (center[0] + int(radius) + 3, center[1] - int(radius) - 3)
        for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(canvas, str(number), corner, cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                        thickness, cv2.LINE_AA)
    return canvas


# --------------------------------------------------------------------------- tracking

@dataclass
class TrackRequest:
    """One Track press.

    video: the uploaded file. points: "t,x,y;t,x,y" (None or "" for none). grid: a grid x grid
    lattice on `grid_frame` (0: none). mask: image path or `[H, W]` array; grid points only
    where it is non-zero. backward: also track before each query frame. trail: overlay trail
    in frames (0 none, -1 all). occluded: "hollow" or "hidden".
    """

    video: str | Path
    points: str | None = None
    grid: int = 0
    grid_frame: int = 0
    mask: object = None
    backward: bool = True
    trail: int = OverlayStyle.trail
    occluded: str = OverlayStyle.occluded


@dataclass
class TrackOutput:
    """Files of one run in `folder`: `overlay` (mp4) and `files` (tracks.csv, .npz, .json, as
    asked)."""

    folder: Path
    overlay: Path
    files: list[Path] = field(default_factory=list)
    summary: str = ""


def checked_queries(request: TrackRequest) -> tuple[np.ndarray | None, int | None]:
    """(explicit queries [N, 3] or None, grid size or None) of a request; refuses a request
    with neither and a grid outside 0..MAX_GRID."""
    queries = parse_points(request.points) if request.points and request.points.strip() else None
    try:
        grid = float(request.grid or 0)
    except (TypeError, ValueError):
        grid = float("nan")
    if not (grid.is_integer() and 0 <= grid <= MAX_GRID):
        raise TaptrError(f"grid size must be a whole number from 0 (none) to {MAX_GRID}, "
                         f"got {request.grid!r}")
    if queries is None and not grid:
        raise TaptrError("no points to track: click the frame to add points, or set a grid "
                         "size")
    return queries, int(grid) or None


def track_to_folder(tracker, request: TrackRequest, folder: Path,
                    max_frames: int | None = DEFAULT_MAX_FRAMES,
                    stage: Callable[[str], None] | None = None,
                    names: Sequence[str] = TRACK_FILES) -> TrackOutput:
    """Track `request` with `tracker` (a `taptr.tracker.Tracker`) and write `overlay.mp4` and
    the track files `names` (default `tracks.csv`, `tracks.npz`, `tracks.json`) into `folder`
    (created).

    Input is checked before any tracking; `stage(description)` is told when a new step starts
    (the tracking itself reports through tqdm).
    """
    stage = stage or (lambda description: None)
    source = open_upload(request.video, max_frames)
    queries, grid = checked_queries(request)
    OverlayStyle(int(request.trail), request.occluded)  # refuse a bad style before tracking
    mask = request.mask
    if mask is not None and grid is None:
        raise TaptrError("a mask selects grid points: set a grid size as well, or remove the "
                         "mask")
    stage("tracking")
    started = time.perf_counter()
    result = tracker.track(source, queries=queries, grid=grid,
                           grid_frame=int(request.grid_frame or 0), mask=mask,
                           backward=bool(request.backward), progress=True)
    seconds = time.perf_counter() - started
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage("writing the tracks")
    files = [result.save(folder / name) for name in names]
    stage("drawing the overlay video")
    overlay = result.save_overlay(folder / OVERLAY_FILE, source, trail=int(request.trail),
                                  occluded=request.occluded)
    width, height = result.video_size
    summary = (f"Tracked {count(result.num_points, 'point')} through "
               f"{count(result.num_frames, 'frame')} "
               f"({width}x{height}) in {seconds:.1f} s on {tracker.device}; "
               f"{float(result.visible.mean()):.0%} of the point-frames are visible.")
    logger.info("%s Files in %s", summary, folder)
    return TrackOutput(folder, overlay, files, summary)
