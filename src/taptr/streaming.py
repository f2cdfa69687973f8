"""Online tracking: frames in one at a time, tracks out as soon as they are final.

    online = tracker.stream(queries=[[0, 120, 80]])
    for frame in camera:                          # RGB uint8 [H, W, 3]
        update = online.push(frame)               # StreamUpdate or None
        if update: use(update.frames, update.tracks, update.visible)
        if clicked: online.add_queries([[x, y]])  # on the frame just pushed
    online.finish()                               # the last frames

TAPTRv2 decodes windows of `window_size` frames every `window_stride` frames (8 and 4 for every
preset). A window runs as soon as its last frame arrives and makes its first `window_stride`
frames final, so results come in batches of `window_stride` frames and a frame waits at most
`window_size - 1` frames (at least `window_size - window_stride`) for its result; `finish()`
returns the rest. Everything the stream returns equals the offline `Tracker.track(...,
backward=False)` result, except up to 3 frames from `T - window_size` on when the video's length
was not given (`num_frames`): offline aligns its last window to the video's end, which a stream
only learns at `finish()`, after it returned those frames (docs/tracking.md measures it).
Memory stays bounded: the model keeps the features of at most one window plus the frames not
yet final.

Queries given to `push(frame, queries=...)` are exact (as if given offline); `add_queries`
adds points on the frame pushed last, which the model may already have decoded in one window,
then the new points join from the next window (they are still tracked from their query frame).
`remove_queries` stops reporting points (the model keeps them, so the remaining points'
tracks do not change).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from taptr.errors import TaptrError
from taptr.model_io import ModelIO
from taptr.queries import as_query_array, validate_queries


@dataclass
class StreamUpdate:
    """Newly final frames.

    frames: [t] absolute frame indices; ids: [n] ids of the reported points (the order of
    `add_queries`); tracks: [n, t, 2] pixels; visible: [n, t] bool; visibility: [n, t].
    Before its query frame a point holds its query position and is not visible.
    """

    frames: np.ndarray
    ids: np.ndarray
    tracks: np.ndarray
    visible: np.ndarray
    visibility: np.ndarray


class OnlineTracker:
    """A live tracking session over one video (see the module docstring); made by
    `Tracker.stream`.

    io: the tracker's `ModelIO` (model, device, precision, frame and point conversion).
    queries: optional initial [N, 3] (t, x, y) rows, any future frame t.
    num_frames: the video's length when known; makes the result identical to offline.
    options: `TrackingOptions` of this session (None: the tracker's, `io.options`).
    """

    def __init__(self, io: ModelIO, queries=None, num_frames: int | None = None,
                 point_chunk: int | None = None, options=None):
        self.io = io
        self.num_frames = num_frames
        self.point_chunk = point_chunk
        self.options = io.options if options is None else options
        self.reset(queries)

    # ------------------------------------------------------------------ state
    def reset(self, queries=None) -> None:
        """Forget the video and every point; optionally start with new queries."""
        self.frame_index = 0  # frames pushed so far
        self.video_size: tuple[int, int] | None = None
        self._model_stream = None
        self._points_in_model = 0
        self._queries = np.zeros((0, 3), np.float32)  # [K, 3], row = id
        self._active = np.zeros(0, bool)  # [K] reported
        self._model_index = np.zeros(0, np.int64)  # [K] index in the model stream, -1 = not yet
        if queries is not None:
            self.add_queries(as_query_array(queries))

    @property
    def ids(self) -> np.ndarray:
        """Ids of the points currently reported."""
        return np.flatnonzero(self._active)

    @property
    def queries(self) -> np.ndarray:
        """[n, 3] (t, x, y) of the points currently reported (order of `ids`)."""
        return self._queries[self._active]

    # ------------------------------------------------------------------ queries
    def add_queries(self, points, frame: int | None = None) -> np.ndarray:
        """Add points and return their ids.

        points: [n, 2] (x, y) on `frame` (default: the frame pushed last, or frame 0 before
        any), or rows [n, 3] (t, x, y). After the first frame, t must be at least the frame
        pushed last.
        """
        if hasattr(points, "detach"):
            points = points.detach().cpu().numpy()
        points = np.asarray(points, np.float32)
        if points.ndim == 2 and points.shape[1] == 2:
            if frame is None:
                frame = max(self.frame_index - 1, 0)
            points = np.concatenate([np.full((len(points), 1), frame, np.float32), points], 1)
        queries = as_query_array(points)
        if self._model_stream is not None:
            self._check_new_queries(queries)
        ids = np.arange(len(self._queries), len(self._queries) + len(queries))
        self._queries = np.concatenate([self._queries, queries], 0)
        self._active = np.concatenate([self._active, np.ones(len(queries), bool)])
        self._model_index = np.concatenate([self._model_index, np.full(len(queries), -1)])
        if self._model_stream is not None:
            self._add_to_model(ids)
        return ids

    def remove_queries(self, ids) -> None:
        """Stop reporting the points `ids` (unknown ids raise `TaptrError`).

        The model keeps tracking them, so the other points' tracks do not change.
        """
        ids = np.atleast_1d(np.asarray(ids, np.int64))
        unknown = ids[(ids < 0) | (ids >= len(self._queries))]
        if len(unknown):
            raise TaptrError(f"unknown query ids: {unknown.tolist()}")
        self._active[ids] = False

    def _check_new_queries(self, queries: np.ndarray) -> None:
        oldest_frame = max(self.frame_index - 1, 0)
        late = queries[:, 0] < oldest_frame
        if late.any():
            raise TaptrError(f"queries can only be added on frame {oldest_frame} (the frame "
                             f"pushed last) or later; got frame {queries[late][0, 0]:g}")
        validate_queries(queries, self.num_frames, self.video_size)

    def _add_to_model(self, ids: np.ndarray) -> None:
        """Hand the queries `ids` to the model stream."""
        ids = ids[self._active[ids]]
        if not len(ids):
            return
        queries = self._queries[ids]
        points = self.io.model_points(queries[:, 1:], self.video_size)
        frames = torch.from_numpy(queries[:, 0].astype(np.int64))[None].to(self.io.device)
        self._model_stream.add_queries(points, frames)
        self._model_index[ids] = self._points_in_model + np.arange(len(ids))
        self._points_in_model += len(ids)

    # ------------------------------------------------------------------ frames
    def push(self, frame, queries=None) -> StreamUpdate | None:
        """Add the next frame (RGB uint8 [H, W, 3], array or tensor); optionally points
        [n, 2] (x, y) on this very frame (exact: as if given offline). Returns the frames that
        became final, or None."""
        frame = _as_frame(frame)
        size = (frame.shape[1], frame.shape[0])
        if self.num_frames is not None and self.frame_index >= self.num_frames:
            raise TaptrError(f"more frames pushed than num_frames={self.num_frames}")
        if self._model_stream is None:
            self._start(size)
        elif size != self.video_size:
            raise TaptrError(f"frame {self.frame_index} is {size[0]}x{size[1]}, earlier frames "
                             f"were {self.video_size[0]}x{self.video_size[1]}")
        if queries is not None:
            self.add_queries(queries, frame=self.frame_index)
        self.frame_index += 1
        prepared = [self.io.prepare_frame(frame, self.options)]
        with torch.inference_mode(), self.io.autocast():
            return self._update(self._model_stream.push(*self.io.stream_inputs(prepared)))

    def finish(self) -> StreamUpdate | None:
        """End of the video: returns every frame not returned yet."""
        if self._model_stream is None:
            return None
        with torch.inference_mode(), self.io.autocast():
            return self._update(self._model_stream.finish())

    def _start(self, video_size: tuple[int, int]) -> None:
        """First frame: the video size is known, queries given so far go to the model."""
        self.video_size = video_size
        waiting = np.flatnonzero(self._active & (self._model_index < 0))
        validate_queries(self._queries[waiting], self.num_frames,
                         video_size) if len(waiting) else None
        device = self.io.device
        self._model_stream = self.io.model.stream(
            torch.zeros(1, 0, 2, device=device), torch.zeros(1, 0, dtype=torch.long, device=device),
            num_frames=self.num_frames, point_chunk=self.point_chunk,
            options=self.options)
        self._add_to_model(waiting)

    def _update(self, chunk) -> StreamUpdate | None:
        """A model chunk -> the update of the reported points (None when nothing is final)."""
        output = self.io.to_pixels(chunk, self._points_in_model, self.video_size)
        if output is None:
            return None
        frames = output.start + np.arange(len(output.positions))
        ids = np.flatnonzero(self._active & (self._model_index >= 0))
        queries = self._queries[ids]
        tracks = output.positions.transpose(1, 0, 2)[self._model_index[ids]]  # [n, t, 2]
        visibility = output.visibility.T[self._model_index[ids]]
        query_frames = queries[:, 0].astype(np.int64)[:, None]
        pinned = frames[None, :] <= query_frames  # before and at the query frame
        tracks = np.where(pinned[..., None], queries[:, None, 1:], tracks)
        visibility = np.where(frames[None, :] == query_frames, 1.0,
                              np.where(pinned, 0.0, visibility)).astype(np.float32)
        return StreamUpdate(frames, ids, tracks.astype(np.float32),
                            visibility > self.io.visible_threshold, visibility)



def _as_frame(frame) -> np.ndarray:
    """A frame as RGB uint8 [H, W, 3] (tensors [3, H, W] / [H, W, 3] and floats in 0..1 too)."""
    from taptr.io.video import ArrayVideo

    if hasattr(frame, "detach") or isinstance(frame, np.ndarray):
        return ArrayVideo(frame[None]).frame(0)
    return ArrayVideo(np.asarray(frame)[None]).frame(0)
