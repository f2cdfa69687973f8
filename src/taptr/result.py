"""`TrackResult`: the tracks of N points through T frames, with saving and overlays."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taptr.coords import FrameSize
from taptr.errors import TaptrError
from taptr.io.tracks import load_tracks, save_tracks
from taptr.text import count


@dataclass
class TrackResult:
    """Tracks in pixels of the original video (pixel centres at integers).

    tracks: [N, T, 2] float32 (x, y); visible: [N, T] bool; visibility: [N, T] float32
    probability of being visible; queries: [N, 3] float32 (t, x, y); video_size: a
    `taptr.coords.FrameSize` (width, height);
    fps: frames per second (None when unknown). `backward` says whether frames before each
    query frame were tracked (False: they hold the query position and are not visible).
    At its query frame a point is exactly at its query and visible.
    """

    tracks: np.ndarray
    visible: np.ndarray
    visibility: np.ndarray
    queries: np.ndarray
    video_size: tuple[int, int]
    fps: float | None = None
    backward: bool = True
    video: object = field(default=None, repr=False, compare=False)  # source, for overlays

    def __post_init__(self) -> None:
        self.video_size = FrameSize(*(int(v) for v in self.video_size))

    @property
    def num_points(self) -> int:
        return self.tracks.shape[0]

    @property
    def num_frames(self) -> int:
        return self.tracks.shape[1]

    def __repr__(self) -> str:
        width, height = self.video_size
        return (f"TrackResult({count(self.num_points, 'point')}, "
                f"{count(self.num_frames, 'frame')}, {width}x{height}, fps={self.fps})")

    # ------------------------------------------------------------------ files
    def save(self, path) -> Path:
        """Write the tracks; the format follows the extension: .npz, .csv or .json."""
        return save_tracks(path, tracks=self.tracks, visible=self.visible,
                           visibility=self.visibility, queries=self.queries,
                           video_size=self.video_size, fps=self.fps)

    @classmethod
    def load(cls, path) -> "TrackResult":
        """Read a .npz or .json track file (CSV lacks the queries and video size)."""
        data = load_tracks(path)
        if data["queries"] is None or data["video_size"] is None:
            raise TaptrError(f"{path}: a CSV file holds no queries or video size; "
                             "load it with taptr.io.load_tracks")
        return cls(data["tracks"], data["visible"], data["visibility"], data["queries"],
                   tuple(data["video_size"]), data["fps"])

    def save_overlay(self, path, video=None, *, trail: int = 12, occluded: str = "hollow",
                     radius: float | None = None, query_marker_frames: int = 10) -> Path:
        """Draw the tracks on the video and write it (.mp4 H.264, .gif, ...); atomic.

        video: the tracked video (path, folder, array, tensor or `VideoSource`); defaults to
        the one this result was computed from. Frames are read and written one at a time.
        """
        from taptr.io.video import open_video, write_video
        from taptr.viz import draw_tracks

        source = open_video(video if video is not None else self._require_video())
        if source.size != tuple(self.video_size) or source.num_frames != self.num_frames:
            raise TaptrError(f"the video ({count(source.num_frames, 'frame')}, {source.size[0]}x"
                             f"{source.size[1]}) does not match the tracks "
                             f"({count(self.num_frames, 'frame')}, "
                             f"{self.video_size[0]}x{self.video_size[1]})")
        frames = draw_tracks(source.iter_frames(), self, trail=trail, occluded=occluded,
                             radius=radius, query_marker_frames=query_marker_frames)
        write_video(path, frames, self.fps or source.fps)
        return Path(path)

    def _require_video(self):
        if self.video is None:
            raise TaptrError("this result has no video attached; pass video=...")
        return self.video
