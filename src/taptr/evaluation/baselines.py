"""Classical point trackers: the floor a learned model must clear and a check of the harness.

All three are `taptr.evaluation.trackers.PointTracker`s, as `taptr.Tracker` is:
`track(video, queries) -> result` with `video` uint8 [T, H, W, 3] RGB, `queries` float32 (or
float64) [N, 3] rows (t, x, y) in pixels (pixel centres at integers), and a result with
`tracks` float32 [N, T, 2] (x, y) pixels and `visible` bool [N, T]. They track each point on its
own, so the official query padding changes nothing (`supports_query_padding = False`: they
accept `pad_queries` and ignore it, as they ignore `progress`).

* `static`: the query point held still, visible in every frame.
* `lk`: OpenCV pyramidal Lucas-Kanade, chained frame to frame.
* `dis`: OpenCV DIS dense optical flow, chained frame to frame.

The two flow trackers start each point at its query frame, step forward to the last frame and
backward to the first (the backward pass is the same chaining on the time-reversed frames), and
mark a step unreliable (not visible) when the forward-backward check fails: moving the new
position back to the previous frame must land within `fb_threshold` pixels (given for a 256-pixel
frame and scaled with the frame size). A point keeps moving while not visible, so it may be
picked up again. Everything is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from taptr import coords
from taptr.flow import DIS_PRESETS, create_dis, sample_flow
from taptr.errors import TaptrError

# One chaining step: (from_frame, to_frame, points float32 [M, 2]) -> (points [M, 2], reliable [M]).
StepFunction = Callable[[int, int, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BaselineResult:
    """Output of a baseline tracker.

    tracks: float32 [N, T, 2] (x, y) pixels (float64 when the queries were float64).
    visible: bool [N, T].
    """

    tracks: np.ndarray
    visible: np.ndarray


def _check_inputs(video: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checked video and queries; float64 queries stay float64 (static stays exact)."""
    video = np.asarray(video)
    queries = np.asarray(queries)
    queries = queries.astype(np.float64 if queries.dtype == np.float64 else np.float32)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise TaptrError(f"video must be [T, H, W, 3], got {list(video.shape)}")
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise TaptrError(f"queries must be [N, 3] rows (t, x, y), got {list(queries.shape)}")
    return video, queries.reshape(-1, 3)


def _query_frames(queries: np.ndarray, num_frames: int) -> np.ndarray:
    """int64 [N] query frame of each query, rounded and clipped into the video."""
    return np.clip(np.round(queries[:, 0]), 0, num_frames - 1).astype(np.int64)


def _initial_result(queries: np.ndarray, num_frames: int) -> BaselineResult:
    """Every point at its query position (in the queries' dtype); visible only at its query
    frame."""
    num_queries = queries.shape[0]
    tracks = np.repeat(queries[:, None, 1:3], num_frames, axis=1)
    visible = np.zeros((num_queries, num_frames), dtype=bool)
    visible[np.arange(num_queries), _query_frames(queries, num_frames)] = True
    return BaselineResult(tracks=tracks, visible=visible)


def chain_tracks(
    queries: np.ndarray, num_frames: int, frame_size: tuple[int, int], step: StepFunction
) -> BaselineResult:
    """Chain `step` from each query frame to the last frame and back to the first.

    queries: [N, 3] (t, x, y). frame_size: (W, H). Frames before a query frame are reached by
    the backward pass (steps t -> t - 1), frames after it by the forward pass. Tracks are
    float32.
    """
    queries = queries.astype(np.float32)
    result = _initial_result(queries, num_frames)
    query_frames = _query_frames(queries, num_frames)
    for direction in (1, -1):
        frame_order = range(num_frames) if direction == 1 else range(num_frames - 1, -1, -1)
        positions = queries[:, 1:3].astype(np.float32).copy()
        active = np.zeros(queries.shape[0], dtype=bool)
        for frame in frame_order:
            active |= query_frames == frame
            next_frame = frame + direction
            if not 0 <= next_frame < num_frames or not active.any():
                continue
            indices = np.flatnonzero(active)
            moved, reliable = step(frame, next_frame, positions[indices])
            positions[indices] = moved
            result.tracks[indices, next_frame] = moved
            result.visible[indices, next_frame] = reliable & coords.on_image(moved, frame_size)
    return result


def _gray_frames(video: np.ndarray) -> list[np.ndarray]:
    import cv2

    return [cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in video]


def _fb_threshold_pixels(threshold_256: float, frame_size: tuple[int, int]) -> float:
    """A threshold given for a 256-pixel frame, in pixels of a frame of `frame_size`."""
    return threshold_256 * max(frame_size) / 256.0


class StaticTracker:
    """The query point held still and always visible."""

    name = "static"

    supports_query_padding = False

    def track(self, video: np.ndarray, queries: np.ndarray, pad_queries: int = 0,
              progress: bool = True) -> BaselineResult:
        """video uint8 [T, H, W, 3]; queries float32 [N, 3] (t, x, y) -> BaselineResult."""
        video, queries = _check_inputs(video, queries)
        result = _initial_result(queries, video.shape[0])
        result.visible[:] = True
        return result


class LucasKanadeTracker:
    """OpenCV pyramidal Lucas-Kanade, chained frame to frame, forward-backward occlusion check."""

    name = "lk"

    def __init__(
        self,
        window_size: int = 21,
        pyramid_levels: int = 3,
        fb_threshold: float = 1.5,
        iterations: int = 30,
    ):
        self.window_size = window_size
        self.pyramid_levels = pyramid_levels
        self.fb_threshold = fb_threshold
        self.iterations = iterations

    def _flow(self, source: np.ndarray, target: np.ndarray, points: np.ndarray):
        """LK from `source` to `target` gray frames: (points [M, 2], found bool [M])."""
        import cv2

        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.iterations, 0.01)
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            source,
            target,
            points.reshape(-1, 1, 2).astype(np.float32),
            None,
            winSize=(self.window_size, self.window_size),
            maxLevel=self.pyramid_levels,
            criteria=criteria,
        )
        return moved.reshape(-1, 2), status.reshape(-1).astype(bool)

    supports_query_padding = False

    def track(self, video: np.ndarray, queries: np.ndarray, pad_queries: int = 0,
              progress: bool = True) -> BaselineResult:
        """video uint8 [T, H, W, 3]; queries float32 [N, 3] (t, x, y) -> BaselineResult."""
        video, queries = _check_inputs(video, queries)
        gray = _gray_frames(video)
        frame_size = (video.shape[2], video.shape[1])
        threshold = _fb_threshold_pixels(self.fb_threshold, frame_size)

        def step(source: int, target: int, points: np.ndarray):
            moved, found = self._flow(gray[source], gray[target], points)
            returned, found_back = self._flow(gray[target], gray[source], moved)
            error = np.linalg.norm(returned - points, axis=1)
            # A point LK lost stays where it was; an unreliable one keeps its estimate.
            moved = np.where(found[:, None], moved, points)
            return moved.astype(np.float32), found & found_back & (error < threshold)

        return chain_tracks(queries, video.shape[0], frame_size, step)


class _FlowCache:
    """Dense flows of frame pairs, kept while they fit in `budget_bytes` (one `track` call)."""

    def __init__(self, compute: Callable[[int, int], np.ndarray], budget_bytes: int):
        self.compute = compute
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.flows: dict[tuple[int, int], np.ndarray] = {}

    def get(self, source: int, target: int) -> np.ndarray:
        key = (source, target)
        if key in self.flows:
            return self.flows[key]
        flow = self.compute(source, target)
        if self.used_bytes + flow.nbytes <= self.budget_bytes:
            self.flows[key] = flow
            self.used_bytes += flow.nbytes
        return flow


class DISFlowTracker:
    """OpenCV DIS dense optical flow, chained frame to frame, forward-backward occlusion check.

    Each frame pair's two flows are computed once and shared by the forward and backward
    passes (kept up to `cache_megabytes`, recomputed beyond).
    """

    name = "dis"
    PRESETS = DIS_PRESETS

    def __init__(
        self, preset: str = "medium", fb_threshold: float = 1.5, cache_megabytes: int = 512
    ):
        if preset not in self.PRESETS:
            raise TaptrError(f"unknown DIS preset {preset!r} (expected one of {self.PRESETS})")
        self.preset = preset
        self.fb_threshold = fb_threshold
        self.cache_megabytes = cache_megabytes

    def _make_dis(self):
        return create_dis(self.preset)

    supports_query_padding = False

    def track(self, video: np.ndarray, queries: np.ndarray, pad_queries: int = 0,
              progress: bool = True) -> BaselineResult:
        """video uint8 [T, H, W, 3]; queries float32 [N, 3] (t, x, y) -> BaselineResult."""
        video, queries = _check_inputs(video, queries)
        gray = _gray_frames(video)
        frame_size = (video.shape[2], video.shape[1])
        threshold = _fb_threshold_pixels(self.fb_threshold, frame_size)
        dis = self._make_dis()
        flows = _FlowCache(
            lambda source, target: dis.calc(gray[source], gray[target], None),
            self.cache_megabytes * 2**20,
        )

        def step(source: int, target: int, points: np.ndarray):
            moved = points + sample_flow(flows.get(source, target), points)
            returned = moved + sample_flow(flows.get(target, source), moved)
            error = np.linalg.norm(returned - points, axis=1)
            return moved.astype(np.float32), error < threshold

        return chain_tracks(queries, video.shape[0], frame_size, step)


BASELINES: dict[str, type] = {
    "static": StaticTracker,
    "lk": LucasKanadeTracker,
    "dis": DISFlowTracker,
}


def make_baseline(name: str):
    """A baseline tracker by name: 'static', 'lk' or 'dis'."""
    try:
        return BASELINES[name]()
    except KeyError:
        raise TaptrError(
            f"unknown baseline tracker {name!r} (expected one of {', '.join(BASELINES)})"
        ) from None
