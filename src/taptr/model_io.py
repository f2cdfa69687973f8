"""The boundary between a user's video and points and the model, shared by `Tracker` (offline)
and `OnlineTracker` (live): device and precision, frame preparation, point conversion both ways,
the visibility threshold, and the one loop that feeds a model stream.

Frames: RGB uint8 [H, W, 3] of the video -> a `PreparedFrame`: resized uint8 [3, H_in, W_in]
(`prepare_frame`, kept small for buffering), with the frame in gray at the resolution the
tracking options ask for hooks that read the video itself (the flow prior's `flow_resolution`)
-> normalised float [1, t, 3, H_in, W_in] on the device (`model_input`) and the gray source
frames [1, t, H_s, W_s] (`source_input`), pushed together into the model stream. Points: video pixels <-> model coordinates through `taptr.coords` (exact for
any resolution and aspect ratio; docs/conventions.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from taptr.coords import model_to_pixel, pixel_to_model
from taptr.device import (autocast, keep_freed_memory, precision_name, resolve_device,
                          resolve_precision)
from taptr.errors import TaptrError
from taptr.models import TAPTRv2
from taptr.models.kernels import prepare_for_inference
from taptr.models.taptrv2.model import VISIBLE_THRESHOLD
from taptr.preprocess import normalize, resize_frames


@runtime_checkable
class ModelStream(Protocol):
    """One model pass over a growing video (`taptr.models.taptrv2.windows.TrackStream`).

    frames: normalised [B, t, 3, H_in, W_in]; sources: optional gray frames [B, t, H_s, W_s]
    uint8 for the hooks; query points [B, n, 2] model coordinates, query frames [B, n]; each
    call returns a `TrackChunk` of the frames that became final (or None).
    """

    def push(self, frames: torch.Tensor, sources: torch.Tensor | None = None): ...

    def finish(self): ...

    def run(self, batches: Iterable) -> Iterator: ...

    def add_queries(self, query_points: torch.Tensor, query_frames: torch.Tensor) -> None: ...


@runtime_checkable
class StreamModel(Protocol):
    """What `ModelIO` (and through it `Tracker` and `OnlineTracker`) needs of a model: its
    `config` (`taptr.config.ModelConfig`: input size, window stride), the `device` it runs on,
    and `stream(query_points [B, N, 2], query_frames [B, N], num_frames=None,
    point_chunk=None, options=None)` returning a `ModelStream` (options: the tracking options,
    `taptr.models.options.TrackingOptions`). Implemented by `taptr.models.TAPTRv2` and
    the ONNX Runtime backend `taptr.export.OnnxTAPTRv2` (CPU only)."""

    config: object

    @property
    def device(self) -> torch.device: ...

    def stream(self, query_points: torch.Tensor, query_frames: torch.Tensor,
               num_frames: int | None = None, point_chunk: int | None = None,
               options=None) -> ModelStream: ...


def source_side(options) -> int | None:
    """The longest side (pixels) of the gray source frames `options` ask for (the flow
    prior's `flow_resolution`), or None when nothing reads them."""
    if options is None or not getattr(options, "flow_prior", False):
        return None
    return getattr(options, "flow_resolution", 0) or None


def gray_source(frame: np.ndarray, side: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> gray uint8 [H_s, W_s], scaled down (area) so that the longer
    side is at most `side` pixels (never up); OpenCV's RGB2GRAY."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    scale = side / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray


@dataclass
class PreparedFrame:
    """A video frame ready for the model (`ModelIO.prepare_frame`).

    image: the network input, resized, uint8 [3, H_in, W_in] (kept small for buffering).
    source: the frame in gray at the resolution the tracking options ask of hooks that read
    the video itself (the flow prior's `flow_resolution`), uint8 [H_s, W_s]; None when no
    hook does.
    """

    image: torch.Tensor
    source: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        extra = 0 if self.source is None else self.source.nbytes
        return self.image.element_size() * self.image.numel() + extra


@dataclass
class PixelChunk:
    """Final frames [start, start + t) in video pixels: positions [t, n, 2], visibility [t, n]
    (probability)."""

    start: int
    positions: np.ndarray
    visibility: np.ndarray


class ModelIO:
    """A TAPTRv2 model on a device, with everything needed to feed it and read it.

    model: a `taptr.models.TAPTRv2` (copied and prepared for inference with the kernels of
    `options.kernels`, `taptr.models.kernels.prepare_for_inference`, on `device`) or another
    `StreamModel` (used as it is: it must already run on `device`).
    device: as `taptr.device.resolve_device` (None = CUDA when available, else CPU).
    precision: as `taptr.device.resolve_precision` (None/"fp32", "bf16", "fp16").
    options: `TrackingOptions` of every stream (None: the model's defaults).
    tune_allocator: on a CPU device, let the process keep the memory PyTorch frees
    (`taptr.device.keep_freed_memory`: fewer page faults, faster; but it changes the whole
    process's allocator, so a library leaves it off unless asked; the `taptr` CLI asks).
    Raises `TaptrError` for an unknown or unavailable device, precision or kernels, or a model
    that runs on another device; `TypeError` for an object that is not a `StreamModel`.
    """

    def __init__(self, model, device=None, precision=None, options=None,
                 tune_allocator: bool = False):
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_precision(precision, self.device)
        if tune_allocator and self.device.type == "cpu":
            keep_freed_memory()
        if options is None:
            options = getattr(model, "default_options", None)
        self.options = options
        if isinstance(model, TAPTRv2):
            model = prepare_for_inference(model, options.kernels if options else None,
                                          self.device, self.autocast_dtype)
            model = model.to(self.device).eval()
        elif not isinstance(model, StreamModel):
            raise TypeError(f"{type(model).__name__} is not a StreamModel (config, device, "
                            "stream): see taptr.model_io.StreamModel")
        elif torch.device(model.device) != self.device:
            raise TaptrError(f"{model!r} runs on {model.device}, not on {self.device}")
        self.model = model
        self.visible_threshold = VISIBLE_THRESHOLD

    @property
    def config(self):
        return self.model.config

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input (H_in, W_in)."""
        height, width = self.config.input_size
        return int(height), int(width)

    @property
    def precision(self) -> str:
        """'fp32', 'bf16' or 'fp16'."""
        return precision_name(self.autocast_dtype)

    def autocast(self):
        """The autocast context of this precision (a no-op for fp32)."""
        return autocast(self.device, self.autocast_dtype)

    # ------------------------------------------------------------------ frames and points
    def prepare_frame(self, frame: np.ndarray, options=None) -> PreparedFrame:
        """RGB uint8 [H, W, 3] -> a `PreparedFrame`: resized uint8 [3, H_in, W_in] (small, for
        buffering), and the gray source frame when `options` (None: this io's) ask for one."""
        tensor = torch.from_numpy(np.require(frame, requirements=("C", "W"))).permute(2, 0, 1)
        image = resize_frames(tensor[None], self.input_size)[0]
        options = self.options if options is None else options
        side = source_side(options)
        return PreparedFrame(image, None if side is None else gray_source(frame, side))

    def model_input(self, frames: list[PreparedFrame]) -> torch.Tensor:
        """Prepared frames -> normalised [1, t, 3, H_in, W_in] on the device."""
        return normalize(torch.stack([f.image for f in frames]).to(self.device))[None]

    @staticmethod
    def source_input(frames: list[PreparedFrame]) -> torch.Tensor | None:
        """Prepared frames -> their gray source frames [1, t, H_s, W_s] uint8 (CPU), or None."""
        if frames[0].source is None:
            return None
        return torch.from_numpy(np.stack([f.source for f in frames]))[None]

    def stream_inputs(self, frames: list[PreparedFrame]) -> tuple[torch.Tensor, ...]:
        """The arguments of a model stream's `push` for prepared frames: (model input,) or
        (model input, gray sources) when the frames carry sources."""
        sources = self.source_input(frames)
        return (self.model_input(frames),) + (() if sources is None else (sources,))

    def model_points(self, points_px: np.ndarray, video_size: tuple[int, int]) -> torch.Tensor:
        """[n, 2] (x, y) video pixels -> [1, n, 2] model coordinates (float32, on the device).
        video_size: (W, H)."""
        height, width = self.input_size
        points = pixel_to_model(torch.from_numpy(points_px.astype(np.float64)), video_size,
                                (width, height))
        return points.float()[None].to(self.device)

    def to_pixels(self, chunk, num_points: int, video_size: tuple[int, int]) -> PixelChunk | None:
        """A model `TrackChunk` -> its first `num_points` points in video pixels (None when the
        chunk is empty). video_size: (W, H)."""
        if chunk is None or chunk.positions.shape[1] == 0:
            return None
        height, width = self.input_size
        positions = chunk.positions[0, :, :num_points].float().cpu().double()
        pixels = model_to_pixel(positions, video_size, (width, height)).float().numpy()
        visibility = torch.sigmoid(chunk.vis_logits[0, :, :num_points, 1].float()).cpu().numpy()
        return PixelChunk(int(chunk.start), pixels, visibility)

    # ------------------------------------------------------------------ one pass
    def run(self, frames: Iterable[PreparedFrame], num_frames: int, points: torch.Tensor,
            query_frames: torch.Tensor, video_size: tuple[int, int], num_points: int,
            point_chunk: int | None = None, on_frames=None) -> Iterator[PixelChunk]:
        """Push prepared frames through one model stream in `window_stride`-sized batches, then
        finish it; yield the final frames of the first `num_points` points in video pixels.

        frames: `PreparedFrame`s (`prepare_frame`); points [1, N, 2] model coordinates (N >=
        num_points: extra points, e.g. padding, are tracked but not returned); query_frames
        [1, N] relative to the first frame; on_frames(count) after each batch is pushed.
        """
        with torch.inference_mode(), self.autocast():
            stream = self.model.stream(points, query_frames, num_frames=num_frames,
                                       point_chunk=point_chunk, options=self.options)
            for chunk in stream.run(self._batches(frames, on_frames)):
                converted = self.to_pixels(chunk, num_points, video_size)
                if converted is not None:
                    yield converted

    def _batches(self, frames: Iterable[PreparedFrame], on_frames) -> Iterator:
        """`stream_inputs` of `window_stride` consecutive frames (the last batch may be
        shorter)."""
        frames = iter(frames)
        while batch := list(itertools.islice(frames, self.config.window_stride)):
            yield self.stream_inputs(batch)
            if on_frames is not None:
                on_frames(len(batch))
