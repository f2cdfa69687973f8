"""TAP-Vid evaluation data: read and write the benchmark's pickle files.

Formats (TAP-Vid README; layouts in docs/conventions.md, section 4), each entry a dict
with `video`, `points` ([N, T, 2] normalised (x, y), corner origin, see `taptr.coords`) and
`occluded` ([N, T] bool, True = not visible):

* TAP-Vid-DAVIS and RoboTAP: one pickle holding a dict `name -> entry`, `video` uint8
  [T, H, W, 3].
* TAP-Vid-RGB-Stacking: one pickle holding a list of entries (no names).
* TAP-Vid-Kinetics: a directory of pickles (`0000_of_0010.pkl` ...) each holding a list of
  entries whose `video` is a sequence of JPEG-encoded frames (bytes).
* A directory of pickles of any of the above (RoboTAP's `robotap_split*.pkl`).
* CSV + MP4 annotations (tapnet's `create_csv_dataset`): see `taptr.data.tapvid_csv`.

Pickles are read with a restricted unpickler that only rebuilds NumPy arrays and plain Python
containers, so a pickle cannot run code. Entries are decoded one at a time (`TapVidSource`
yields raw entries lazily, file by file), so a Kinetics directory never sits in memory whole.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taptr.errors import TaptrError
from taptr.io.atomic import atomic_path
from taptr.text import count

ENTRY_KEYS = ("video", "points", "occluded")

# Globals a TAP-Vid pickle may reference: NumPy's array/dtype/scalar reconstruction under its
# 1.x (`numpy.core`) and 2.x (`numpy._core`) module names.
_ALLOWED_GLOBALS = frozenset(
    [
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *(
            (f"{core}.multiarray", name)
            for core in ("numpy.core", "numpy._core")
            for name in ("_reconstruct", "scalar")
        ),
        *((f"{core}.numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")),
        ("collections", "OrderedDict"),
    ]
)


# What unpickling garbage or a foreign pickle raises (MemoryError and the like propagate).
_UNPICKLING_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
    IndexError, KeyError,
)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except NumPy array reconstruction."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_pickle(path: str | os.PathLike) -> object:
    """Load a TAP-Vid pickle safely; any failure becomes a one-line `TaptrError`."""
    try:
        with open(path, "rb") as handle:
            return _ArrayOnlyUnpickler(handle).load()
    except FileNotFoundError:
        raise TaptrError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise TaptrError(f"{path} is a directory, expected a pickle file") from None
    except OSError as error:
        raise TaptrError(f"cannot read {path}: {error.strerror or error}") from None
    except _UNPICKLING_ERRORS as error:  # a broken or foreign file: "not our format"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TaptrError(f"{path} is not a TAP-Vid pickle ({reason})") from None


@dataclass
class TapVidVideo:
    """One decoded TAP-Vid video at its native resolution.

    video: uint8 [T, H, W, 3] RGB. points: float [N, T, 2] normalised (x, y), corner origin.
    occluded: bool [N, T], True = not visible.
    """

    name: str
    video: np.ndarray
    points: np.ndarray
    occluded: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the frames."""
        return int(self.video.shape[2]), int(self.video.shape[1])


def is_entry(value: object) -> bool:
    """Whether `value` looks like one TAP-Vid video entry."""
    return isinstance(value, Mapping) and all(key in value for key in ENTRY_KEYS)


def _has_encoded_frames(frames) -> bool:
    """Whether a `video` field holds encoded images (bytes per frame) rather than pixels."""
    return bool(len(frames)) and isinstance(frames[0], (bytes, bytearray))


def decode_frames(frames, where: str) -> np.ndarray:
    """`video` field -> uint8 [T, H, W, 3]; JPEG/PNG bytes frames (Kinetics) are decoded."""
    if _has_encoded_frames(frames):
        from PIL import Image

        try:
            decoded = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in frames]
        except OSError as error:
            raise TaptrError(f"{where}: cannot decode an encoded frame ({error})") from None
        return np.stack(decoded)
    video = np.asarray(frames)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise TaptrError(
            f"{where}: 'video' must be uint8 [T, H, W, 3] or encoded frames, "
            f"got {video.dtype} {list(video.shape)}"
        )
    return video


def decode_entry(name: str, entry: Mapping) -> TapVidVideo:
    """Validate one raw entry and decode its frames."""
    if not is_entry(entry):
        raise TaptrError(f"{name}: not a TAP-Vid entry (needs keys {', '.join(ENTRY_KEYS)})")
    video = decode_frames(entry["video"], name)
    points = np.asarray(entry["points"])
    occluded = np.asarray(entry["occluded"]).astype(bool)
    num_frames = video.shape[0]
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[1] != num_frames:
        raise TaptrError(
            f"{name}: 'points' must be [N, {num_frames}, 2], got {list(points.shape)}"
        )
    if occluded.shape != points.shape[:2]:
        raise TaptrError(
            f"{name}: 'occluded' must be {list(points.shape[:2])}, got {list(occluded.shape)}"
        )
    return TapVidVideo(name=name, video=video, points=points, occluded=occluded)


def _entries_of(container: object, label: str) -> tuple[str, list[tuple[str, Mapping]]]:
    """Layout ('dict', 'list' or 'entry') and (name, raw entry) pairs of one unpickled file."""
    if is_entry(container):
        return "entry", [(label, container)]
    if isinstance(container, Mapping) and container and all(
        is_entry(value) for value in container.values()
    ):
        return "dict", [(str(name), entry) for name, entry in container.items()]
    if isinstance(container, (list, tuple)) and container and all(
        is_entry(value) for value in container
    ):
        return "list", [(f"{label}_{index:04d}", entry) for index, entry in enumerate(container)]
    raise TaptrError(f"{label} is not a TAP-Vid pickle (expected a dict or list of videos)")


def _read_file(file: Path) -> tuple[str, list[tuple[str, Mapping]]]:
    """Layout and (name, raw entry) pairs of one pickle or CSV file."""
    if file.suffix == ".csv":
        from taptr.data.tapvid_csv import csv_entries

        return "csv", list(csv_entries(file))
    return _entries_of(load_pickle(file), file.stem)


class TapVidSource:
    """The TAP-Vid videos of a file or a directory, read lazily.

    Accepts a pickle, a directory of pickles (taken in sorted order, loaded one at a time), or
    a CSV + MP4 annotation file (`taptr.data.tapvid_csv`; also found in a directory without
    pickles). Iterating yields `(name, raw_entry)`; decode with `decode_entry`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            children = sorted(self.path.iterdir())
            self.files = [p for p in children if p.suffix in (".pkl", ".pickle")] or [
                p for p in children if p.suffix == ".csv"
            ]
            if not self.files:
                raise TaptrError(f"{self.path}: directory holds no .pkl (or .csv) files")
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise TaptrError(f"no such file or directory: {self.path}")
        self.layout, self._first_entries = _read_file(self.files[0])
        first_entry = self._first_entries[0][1]
        self.encoded_frames = self.layout != "csv" and _has_encoded_frames(first_entry["video"])

    @property
    def known_length(self) -> int | None:
        """Number of videos when it is known without reading further files."""
        return len(self._first_entries) if len(self.files) == 1 else None

    def describe(self) -> str:
        """Layout of the data, e.g. 'dict pickle, array frames' or 'list 10 pickles, jpeg frames'."""
        if self.layout == "csv":
            return f"csv + mp4 ({count(len(self.files), 'csv file')})"
        files = "pickle" if len(self.files) == 1 else count(len(self.files), "pickle")
        frames = "jpeg frames" if self.encoded_frames else "array frames"
        return f"{self.layout} {files}, {frames}"

    def __iter__(self) -> Iterator[tuple[str, Mapping]]:
        yield from self._first_entries
        for file in self.files[1:]:
            yield from _read_file(file)[1]


def read_tapvid(path: str | os.PathLike) -> Iterator[TapVidVideo]:
    """Every video of a TAP-Vid file or directory, decoded, in file order."""
    for name, entry in TapVidSource(path):
        yield decode_entry(name, entry)


def encode_jpeg_frames(video: np.ndarray, quality: int = 95) -> np.ndarray:
    """uint8 [T, H, W, 3] -> bytes array [T] of JPEG frames (the Kinetics layout, dtype 'S')."""
    from PIL import Image

    encoded = []
    for frame in video:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        encoded.append(buffer.getvalue())
    return np.array(encoded)


def _checked_entry(name: str, value: Mapping) -> dict[str, np.ndarray]:
    video = np.asarray(value["video"])
    points = np.asarray(value["points"], dtype=np.float32)
    occluded = np.asarray(value["occluded"], dtype=bool)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise TaptrError(f"{name}: video must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    if points.shape != (occluded.shape[0], video.shape[0], 2) or occluded.ndim != 2:
        raise TaptrError(
            f"{name}: points {points.shape} / occluded {occluded.shape} do not match "
            f"{count(video.shape[0], 'frame')}"
        )
    return {"video": video, "points": points, "occluded": occluded}


def write_tapvid_pickle(
    path: str | os.PathLike,
    videos: Mapping[str, Mapping],
    *,
    layout: str = "dict",
    jpeg_quality: int | None = None,
) -> None:
    """Write videos in the TAP-Vid pickle format, atomically (temp file + rename).

    videos: name -> {"video": uint8 [T, H, W, 3], "points": float32 [N, T, 2] normalised
        (x, y) corner origin (`taptr.coords.pixel_to_tapvid`), "occluded": bool [N, T]}.
    layout: "dict" (DAVIS/RoboTAP: name -> entry) or "list" (RGB-Stacking/Kinetics: names
        dropped).
    jpeg_quality: if given, frames are stored as JPEG bytes (the Kinetics layout).
    """
    if layout not in ("dict", "list"):
        raise ValueError(f"layout must be 'dict' or 'list', got {layout!r}")
    entries = {name: _checked_entry(name, value) for name, value in videos.items()}
    if jpeg_quality is not None:
        for entry in entries.values():
            entry["video"] = encode_jpeg_frames(entry["video"], jpeg_quality)
    payload = entries if layout == "dict" else list(entries.values())
    _atomic_pickle_dump(payload, Path(path))


def _atomic_pickle_dump(payload: object, path: Path) -> None:
    with atomic_path(path) as temp_path, open(temp_path, "wb") as handle:
        pickle.dump(payload, handle, protocol=4)
