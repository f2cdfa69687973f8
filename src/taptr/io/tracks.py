"""Track files (.npz, .csv, .json) and query files (.csv/.txt, .npy, .npz).

Track files hold, for N points and T frames (docs/conventions.md, section 4):
  tracks [N, T, 2] float32 (x, y) pixels, visible [N, T] bool, visibility [N, T] float32,
  queries [N, 3] float32 (t, x, y), video_size (W, H), fps (float, NaN when unknown).
The CSV is the long form `point,frame,x,y,visible,visibility`, one row per point and frame; it
cannot hold the queries, video size or fps, so `load_tracks` returns None for those.
Every write is atomic (temporary file + os.replace).
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from taptr.errors import TaptrError
from taptr.io.atomic import atomic_path

TRACK_EXTENSIONS = (".npz", ".csv", ".json")
CSV_HEADER = ("point", "frame", "x", "y", "visible", "visibility")
JSON_FORMAT = "taptr-tracks"


# --------------------------------------------------------------------------- track files

def save_tracks(path, *, tracks, visible, visibility, queries, video_size, fps=None) -> Path:
    """Write tracks to `path`; the format follows the extension (.npz, .csv, .json)."""
    path = Path(path)
    arrays = _checked_arrays(tracks, visible, visibility, queries)
    writer = {".npz": _write_npz, ".csv": _write_csv, ".json": _write_json}.get(path.suffix.lower())
    if writer is None:
        raise TaptrError(f"cannot save tracks as {path.name!r}: use .npz, .csv or .json")
    with atomic_path(path) as temp_path:
        writer(temp_path, *arrays, video_size=video_size, fps=fps)
    return path


def load_tracks(path) -> dict:
    """Read a track file back: a dict with the keys of `save_tracks` (None where absent)."""
    path = Path(path)
    if not path.is_file():
        raise TaptrError(f"no such track file: {str(path)!r}")
    reader = {".npz": _read_npz, ".csv": _read_csv, ".json": _read_json}.get(path.suffix.lower())
    if reader is None:
        raise TaptrError(f"cannot read tracks from {path.name!r}: use .npz, .csv or .json")
    try:
        return reader(path)
    except (KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise TaptrError(f"{path}: not a valid track file ({error})") from None


def _checked_arrays(tracks, visible, visibility, queries):
    tracks = np.asarray(tracks, np.float32)
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise TaptrError(f"tracks must be [N, T, 2], got shape {tracks.shape}")
    shape = tracks.shape[:2]
    visible = np.asarray(visible, bool)
    visibility = np.asarray(visibility, np.float32)
    queries = np.asarray(queries, np.float32).reshape(-1, 3)
    if visible.shape != shape or visibility.shape != shape or len(queries) != shape[0]:
        raise TaptrError(f"inconsistent track arrays: tracks {tracks.shape}, visible "
                         f"{visible.shape}, visibility {visibility.shape}, queries {queries.shape}")
    return tracks, visible, visibility, queries


def _write_npz(path, tracks, visible, visibility, queries, *, video_size, fps):
    with open(path, "wb") as handle:
        np.savez_compressed(
            handle, tracks=tracks, visible=visible, visibility=visibility, queries=queries,
            video_size=np.asarray(video_size, np.int64),
            fps=np.float64(np.nan if fps is None else fps),
        )


def _read_npz(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        fps = float(data["fps"]) if "fps" in data else math.nan
        return {
            "tracks": data["tracks"].astype(np.float32),
            "visible": data["visible"].astype(bool),
            "visibility": data["visibility"].astype(np.float32),
            "queries": data["queries"].astype(np.float32),
            "video_size": tuple(int(v) for v in data["video_size"]),
            "fps": None if math.isnan(fps) else fps,
        }


def _write_csv(path, tracks, visible, visibility, queries, *, video_size, fps):
    num_points, num_frames = tracks.shape[:2]
    frames = np.arange(num_frames)
    with open(path, "w", newline="") as handle:
        handle.write(",".join(CSV_HEADER) + "\n")
        for point in range(num_points):  # one formatted block per point keeps memory O(T)
            block = io.StringIO()
            np.savetxt(
                block,
                np.column_stack([np.full(num_frames, point), frames, tracks[point],
                                 visible[point].astype(np.int64), visibility[point]]),
                fmt=["%d", "%d", "%.4f", "%.4f", "%d", "%.4f"], delimiter=",",
            )
            handle.write(block.getvalue())


def _read_csv(path) -> dict:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != CSV_HEADER:
            raise ValueError(f"header must be {','.join(CSV_HEADER)}")
        rows = np.asarray([[float(value) for value in row] for row in reader if row], np.float64)
    if rows.size == 0:
        raise ValueError("no rows")
    points, frames = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    shape = (points.max() + 1, frames.max() + 1)
    if len(rows) != shape[0] * shape[1]:
        raise ValueError("the CSV must have one row for every point and frame")
    tracks = np.zeros(shape + (2,), np.float32)
    visible = np.zeros(shape, bool)
    visibility = np.zeros(shape, np.float32)
    tracks[points, frames] = rows[:, 2:4]
    visible[points, frames] = rows[:, 4] > 0
    visibility[points, frames] = rows[:, 5]
    return {"tracks": tracks, "visible": visible, "visibility": visibility,
            "queries": None, "video_size": None, "fps": None}


def _write_json(path, tracks, visible, visibility, queries, *, video_size, fps):
    document = {
        "format": JSON_FORMAT,
        "version": 1,
        "video_size": [int(v) for v in video_size],
        "fps": None if fps is None else float(fps),
        "num_points": int(tracks.shape[0]),
        "num_frames": int(tracks.shape[1]),
        "queries": queries.tolist(),
        "tracks": tracks.tolist(),
        "visible": visible.astype(int).tolist(),
        "visibility": visibility.tolist(),
    }
    with open(path, "w") as handle:
        json.dump(document, handle, separators=(",", ":"))


def _read_json(path) -> dict:
    with open(path) as handle:
        document = json.load(handle)
    if document.get("format") != JSON_FORMAT:
        raise ValueError(f"'format' is not {JSON_FORMAT!r}")
    num_points, num_frames = document["num_points"], document["num_frames"]
    return {
        "tracks": np.asarray(document["tracks"], np.float32).reshape(num_points, num_frames, 2),
        "visible": np.asarray(document["visible"], bool).reshape(num_points, num_frames),
        "visibility": np.asarray(document["visibility"], np.float32).reshape(num_points,
                                                                              num_frames),
        "queries": np.asarray(document["queries"], np.float32).reshape(num_points, 3),
        "video_size": tuple(document["video_size"]),
        "fps": document["fps"],
    }


# --------------------------------------------------------------------------- query files

def parse_points(text: str) -> np.ndarray:
    """Queries from a string "t,x,y;t,x,y;..." -> `[N, 3]` float32 (t, x, y)."""
    rows = [part.strip() for part in text.replace("\n", ";").split(";")]
    rows = [row for row in rows if row]
    if not rows:
        raise TaptrError("no points given: write them as \"t,x,y;t,x,y\"")
    values = []
    for number, row in enumerate(rows):
        fields = [field for field in row.replace(",", " ").split() if field]
        values.append(_parse_row(fields, f"point {number} ({row!r})"))
    return np.asarray(values, np.float32)


def read_queries(path) -> np.ndarray:
    """Read a query file -> `[N, 3]` float32 (t, x, y) pixels.

    .csv/.txt: one query per line `t,x,y` (commas or spaces; `#` comments and one header
    line allowed). .npy: an `[N, 3]` array. .npz: the array `queries` (or its only array).
    Malformed rows raise `TaptrError` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise TaptrError(f"no such query file: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _read_query_array(path)
    if suffix not in (".csv", ".txt", ".tsv", ""):
        raise TaptrError(f"{path.name}: query files must be .csv, .txt, .npy or .npz")
    return _read_query_text(path)


def _read_query_text(path: Path) -> np.ndarray:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TaptrError(f"{path}: cannot read the query file ({error})") from None
    values = []
    for number, line in enumerate(lines, start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        fields = [field for field in content.replace(",", " ").replace(";", " ").split() if field]
        if not values and not _is_number(fields[0]):
            continue  # a header line such as "t,x,y"
        values.append(_parse_row(fields, f"{path.name} line {number} ({content!r})"))
    if not values:
        raise TaptrError(f"{path}: no queries in the file (expected lines \"t,x,y\")")
    return np.asarray(values, np.float32)


def _read_query_array(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                names = list(data.keys())
                if "queries" in data:
                    data = data["queries"]
                elif len(names) == 1:
                    data = data[names[0]]
                else:
                    raise TaptrError(f"{path}: no 'queries' array (found {', '.join(names)})")
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise TaptrError(f"{path}: cannot read the query array ({error})") from None
    array = np.asarray(data)
    if array.ndim != 2 or array.shape[1] != 3 or not np.issubdtype(array.dtype, np.number):
        raise TaptrError(f"{path}: queries must be a numeric [N, 3] array of (t, x, y), "
                         f"got {array.dtype} {array.shape}")
    if len(array) == 0:
        raise TaptrError(f"{path}: the query array is empty")
    return array.astype(np.float32)


def _parse_row(fields: list[str], where: str) -> list[float]:
    if len(fields) != 3:
        raise TaptrError(f"{where}: expected 3 numbers t,x,y, got {len(fields)}")
    try:
        return [float(field) for field in fields]
    except ValueError:
        raise TaptrError(f"{where}: not a number") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
