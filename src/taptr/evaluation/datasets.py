"""The TAP-Vid evaluation protocol's data side: query sampling and frame resizing.

Reading and writing the pickles lives in `taptr.data.tapvid` (re-exported here). Query
sampling follows tapnet's `sample_queries_first` / `sample_queries_strided`; resizing follows
its `resize_video` (mediapy: PIL Lanczos per frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taptr.data.tapvid import (  # noqa: F401  (re-exported)
    TapVidSource,
    TapVidVideo,
    decode_entry,
    read_tapvid,
    write_tapvid_pickle,
)

QUERY_STRIDE = 5
METRIC_RESOLUTION = 256


@dataclass
class QuerySet:
    """Queries of one video in TAP-Vid layout, in the units of the points they came from.

    query_points: float64 [Q, 3] rows (t, y, x) (tapnet's order).
    target_points: [Q, T, 2] (x, y), the ground-truth track of each query.
    occluded: bool [Q, T].
    track_index: int64 [Q], the source track of each query (tapnet's `trackgroup`).
    """

    query_points: np.ndarray
    target_points: np.ndarray
    occluded: np.ndarray
    track_index: np.ndarray

    def __len__(self) -> int:
        return int(self.query_points.shape[0])

    @property
    def query_frames(self) -> np.ndarray:
        """int64 [Q] frame of each query."""
        return np.round(self.query_points[:, 0]).astype(np.int64)

    @property
    def query_xy(self) -> np.ndarray:
        """[Q, 2] (x, y) of each query."""
        return self.query_points[:, [2, 1]]


def _query_set(track_index: np.ndarray, frames: np.ndarray, points, occluded) -> QuerySet:
    query_yx = points[track_index, frames][:, ::-1]
    query_points = np.concatenate([frames[:, None].astype(np.float64), query_yx], axis=1)
    return QuerySet(
        query_points=query_points,
        target_points=points[track_index],
        occluded=occluded[track_index],
        track_index=track_index.astype(np.int64),
    )


def sample_queries_first(occluded: np.ndarray, points: np.ndarray) -> QuerySet:
    """One query per track at its first visible frame; never-visible tracks are dropped.

    occluded: bool [N, T]. points: [N, T, 2] (x, y), any units.
    """
    occluded = np.asarray(occluded, dtype=bool)
    track_index = np.flatnonzero((~occluded).any(axis=1))
    first_visible = np.argmax(~occluded[track_index], axis=1)
    return _query_set(track_index, first_visible, np.asarray(points), occluded)


def sample_queries_strided(
    occluded: np.ndarray, points: np.ndarray, stride: int = QUERY_STRIDE
) -> QuerySet:
    """A query at frames 0, stride, 2*stride, ... for every track visible there.

    Queries are ordered by query frame, then by track (tapnet's order). occluded: bool [N, T].
    points: [N, T, 2] (x, y), any units.
    """
    occluded = np.asarray(occluded, dtype=bool)
    query_frames = np.arange(0, occluded.shape[1], stride)
    frame_grid, track_grid = np.nonzero(~occluded[:, query_frames].T)
    return _query_set(track_grid, query_frames[frame_grid], np.asarray(points), occluded)


def sample_queries(occluded: np.ndarray, points: np.ndarray, query_mode: str) -> QuerySet:
    """`sample_queries_first` or `sample_queries_strided` by name."""
    if query_mode == "first":
        return sample_queries_first(occluded, points)
    if query_mode == "strided":
        return sample_queries_strided(occluded, points)
    raise ValueError(f"unknown query mode {query_mode!r} (expected 'first' or 'strided')")


def resize_video(video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, size[1], size[0], 3] with PIL's Lanczos filter.

    size is (W, H). Returns the input unchanged when it already has that size (as tapnet).
    """
    width, height = size
    if video.shape[1:3] == (height, width):
        return video
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.LANCZOS))
            for frame in video
        ]
    )
