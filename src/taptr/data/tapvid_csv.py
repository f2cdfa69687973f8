"""TAP-Vid annotations as CSV + MP4 (tapnet's `create_csv_dataset`, an optional RoboTAP layout).

Each CSV row is one track: `video_id, x0, y0, occ0, x1, y1, occ1, ...` with (x, y) normalised
to [0, 1] (corner origin, as in the pickles) and occ 0/1. The video is `<video_id>.mp4` (or
`video_id` itself when it ends in .mp4) next to the CSV. As in tapnet, tracks longer than the
video are cut to it, and videos longer than `MAX_VIDEO_FRAMES` are split into equal parts
evaluated as separate videos (`<video_id>_part<k>`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from taptr.errors import TaptrError

MAX_VIDEO_FRAMES = 1000


def read_csv_tracks(csv_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """video_id -> (points float32 [N, T, 2] normalised (x, y), occluded bool [N, T])."""
    rows: dict[str, list[np.ndarray]] = {}
    try:
        with open(csv_path, newline="") as handle:
            for line_number, row in enumerate(csv.reader(handle), start=1):
                if not row:
                    continue
                values = row[1:]
                if len(values) % 3:
                    raise TaptrError(
                        f"{csv_path}:{line_number}: expected (x, y, occluded) triples after the "
                        "video id"
                    )
                rows.setdefault(row[0], []).append(np.asarray(values, dtype=np.float32))
    except ValueError as error:
        raise TaptrError(f"{csv_path}: not a TAP-Vid CSV ({error})") from None
    tracks = {}
    for video_id, track_rows in rows.items():
        if len({len(values) for values in track_rows}) != 1:
            raise TaptrError(f"{csv_path}: tracks of {video_id} have different lengths")
        stacked = np.stack(track_rows).reshape(len(track_rows), -1, 3)
        tracks[video_id] = (stacked[..., :2], stacked[..., 2] > 0)
    if not tracks:
        raise TaptrError(f"{csv_path}: no tracks")
    return tracks


def video_path_for(csv_path: Path, video_id: str) -> Path:
    """The MP4 of `video_id`, next to the CSV."""
    name = video_id if video_id.endswith(".mp4") else f"{video_id}.mp4"
    return csv_path.parent / name


class LazyCsvEntry(Mapping):
    """A TAP-Vid entry whose frames are decoded from the MP4 on first access.

    Holds frames `start .. stop-1` of the video and the matching part of the tracks.
    """

    KEYS = ("video", "points", "occluded")

    def __init__(self, video_path: Path, points, occluded, start: int, stop: int):
        self.video_path, self.points, self.occluded = video_path, points, occluded
        self.start, self.stop = start, stop
        self._loaded: dict | None = None

    def _load(self) -> dict:
        if self._loaded is None:
            from taptr.io.video import open_video

            with open_video(self.video_path) as source:
                frames = source.read_frames(self.start, min(self.stop, source.num_frames))
            length = min(frames.shape[0], self.points.shape[1] - self.start)
            self._loaded = {
                "video": frames[:length],
                "points": self.points[:, self.start : self.start + length],
                "occluded": self.occluded[:, self.start : self.start + length],
            }
        return self._loaded

    def __getitem__(self, key):
        return self._load()[key]

    def __contains__(self, key) -> bool:  # without decoding
        return key in self.KEYS

    def __iter__(self):
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)


def csv_entries(csv_path: Path) -> Iterator[tuple[str, LazyCsvEntry]]:
    """(name, lazy entry) for every video of a CSV, split into parts of <= 1000 frames."""
    from taptr.io.video import open_video

    for video_id, (points, occluded) in read_csv_tracks(csv_path).items():
        video_path = video_path_for(csv_path, video_id)
        if not video_path.is_file():
            raise TaptrError(f"{csv_path}: video {video_path.name} of {video_id} not found")
        with open_video(video_path) as source:
            num_frames = min(source.num_frames, points.shape[1])
        name = video_id[:-4] if video_id.endswith(".mp4") else video_id
        num_parts = max(1, math.ceil(num_frames / MAX_VIDEO_FRAMES))
        for part in range(num_parts):
            start, stop = part * num_frames // num_parts, (part + 1) * num_frames // num_parts
            part_name = name if num_parts == 1 else f"{name}_part{part}"
            yield part_name, LazyCsvEntry(video_path, points, occluded, start, stop)
