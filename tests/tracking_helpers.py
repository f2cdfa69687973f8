"""Plain helpers shared by the test files: synthetic clips and their writer, a seeded tiny model
(random weights), one-thread runs, colours sampled along tracks. Shared fixtures are in
`conftest.py`."""

from __future__ import annotations

import contextlib
import functools
from fractions import Fraction
from pathlib import Path

import numpy as np

SHARED_VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "videos"


def moving_square_frames(num_frames: int = 12, height: int = 48, width: int = 64,
                         seed: int = 0) -> np.ndarray:
    """[T, H, W, 3] uint8: a blocky textured background with a bright square moving right/down."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 120, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    background = np.repeat(np.repeat(blocks, 4, 0), 4, 1)[:height, :width]  # 4x4 texture
    frames = np.repeat(background[None], num_frames, axis=0)
    side = max(4, min(height, width) // 5)
    for t in range(num_frames):
        top, left = 2 + t % max(1, height - side - 4), 3 + (2 * t) % max(1, width - side - 6)
        frames[t, top:top + side, left:left + side] = (250, 200, 40)
    return frames


def write_clip(path, frames: np.ndarray, fps: float = 10.0, rotation: int = 0,
               keyframe_interval: int | None = None, codec: str = "libx264",
               pix_fmt: str | None = None) -> Path:
    """Encode `frames` [T, H, W, 3] with PyAV (lossless-ish, any size when pix_fmt allows).

    rotation: display-matrix rotation in degrees (counter-clockwise), like a phone video.
    """
    import av

    path = Path(path)
    height, width = frames.shape[1:3]
    pix_fmt = pix_fmt or "yuv444p"
    options = {"crf": "0"} if codec == "libx264" else {}
    if keyframe_interval is not None:
        options["g"] = str(keyframe_interval)
        options["keyint_min"] = str(keyframe_interval)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001),
                                      options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@functools.lru_cache(maxsize=None)
def tiny_model():
    """The "tiny" preset with seeded random weights (shared; do not modify)."""
    import torch

    from taptr.models import build_model

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    torch.random.set_rng_state(generator_state)
    return model


def tiny_tracker():
    from taptr.tracker import Tracker

    return Tracker(tiny_model(), device="cpu")


@functools.lru_cache(maxsize=None)
def tiny_weights_file(folder: str) -> Path:
    """Save the tiny model as our safetensors weights in `folder` (once per folder)."""
    from taptr.weights import save_weights

    return save_weights(tiny_model(), Path(folder) / "tiny.safetensors")


def colours_at(video, tracks):
    """Bilinear colours `[T, N, 3]` of uint8 frames `[T, H, W, 3]` (a tensor) at pixel points
    `[T, N, 2]` (pixel centres at integers; outside the frame: the border colour)."""
    import torch
    import torch.nn.functional as F

    _, height, width, _ = video.shape
    grid = torch.stack(
        [(2 * tracks[..., 0] + 1) / width - 1, (2 * tracks[..., 1] + 1) / height - 1], dim=-1
    )
    sampled = F.grid_sample(video.permute(0, 3, 1, 2).float(), grid[:, :, None],
                            align_corners=False, padding_mode="border")
    return sampled[..., 0].permute(0, 2, 1)


@contextlib.contextmanager
def single_thread():
    """Run PyTorch on one thread inside the block (restored after).

    The tiny model's ops are too small to gain from threads, and on a shared, oversubscribed
    CPU two spinning OpenMP threads made the tests up to 40x slower.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
