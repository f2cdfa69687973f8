"""Video and track file input/output.

- `open_video(source)`: lazy frames from a file, image folder, array or tensor (`VideoSource`).
- `write_video(path, frames, fps)`: H.264 MP4 (fallback MPEG-4), WebM, MKV, AVI, GIF.
- `save_tracks` / `load_tracks`: .npz, .csv (long form), .json.
- `read_queries` / `parse_points`: (t, x, y) query rows from files or "t,x,y;..." strings.
All writes are atomic.
"""

from taptr.io.tracks import TRACK_EXTENSIONS, load_tracks, parse_points, read_queries, save_tracks
from taptr.io.video import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ArrayVideo,
    ImageFolderVideo,
    OpenCVVideo,
    PyAVVideo,
    VideoSource,
    open_video,
    write_video,
)

__all__ = [
    "ArrayVideo", "IMAGE_EXTENSIONS", "ImageFolderVideo", "OpenCVVideo", "PyAVVideo",
    "TRACK_EXTENSIONS", "VIDEO_EXTENSIONS", "VideoSource", "load_tracks", "open_video",
    "parse_points", "read_queries", "save_tracks", "write_video",
]
