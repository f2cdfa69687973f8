"""`Tracker`: track points through a video with a TAPTRv2 model.

    tracker = Tracker.from_pretrained()              # bundled weights, GPU when available
    result = tracker.track("clip.mp4", grid=10)      # or queries=[[t, x, y], ...]
    result.save("tracks.npz"); result.save_overlay("overlay.mp4")

How a video is tracked:
- Frames are decoded one at a time, resized to the model's input (any resolution and aspect
  ratio; coordinates map exactly both ways through `taptr.coords`) and pushed window by window
  through `model.stream`, which encodes features per window and frees them: peak memory does
  not grow with the video's length.
- Forward pass: from the earliest query frame to the end. Backward pass (unless
  `backward=False`): the time-reversed video from the latest query frame down to frame 0, for
  the points whose query frame is after 0; it fills the frames before each query frame. Files
  are read backwards in bounded segments (`VideoSource.iter_frames_reversed`).
- At its query frame a point is exactly at its query and visible; with `backward=False`
  frames before the query frame hold the query position and are not visible.
- Many points: the model chunks its per-point work exactly (`point_chunk`); every point still
  attends to every other, so results do not depend on the chunk size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from taptr import coords
from taptr.errors import TaptrError
from taptr.io.video import open_video
from taptr.loading import load_model  # the one loader (also reachable here, as before)
from taptr.model_io import ModelIO, PixelChunk
from taptr.queries import build_queries
from taptr.result import TrackResult
from taptr.streaming import OnlineTracker

# Official evaluation pads queries to 800 with static points restarting within 12 frames.
PADDING_RESTART_FRAMES = 12


class Tracker:
    """Tracks points with a TAPTRv2 model on CPU or GPU.

    model: a `taptr.models.TAPTRv2`, or an exported `taptr.export.OnnxTAPTRv2`.
    device: None = CUDA when available, else CPU. dtype: None/"fp32", or "bf16"/"fp16" to run
    under autocast (bf16 also works on CPU).
    backend: "pytorch" (default for a network) or "onnxruntime" (CPU, fp32; a network is
    exported once into taptr's cache, `taptr.backends`); None picks by the model given.
    options: `taptr.models.TrackingOptions` (our additions on/off and their settings,
    chunking, padding, kernels), or a dict of changes to the model's default options (None:
    the defaults stored with the weights). `TrackingOptions.plain()` of them gives the paper's
    TAPTRv2 stream.
    tune_allocator: on the CPU, let the process keep the memory PyTorch frees (faster; changes
    the whole process's allocator, so off unless asked: `taptr.device.keep_freed_memory`; the
    `taptr` commands turn it on for their own process).
    Raises `TaptrError` for an unknown or unavailable device, dtype, backend or option. Feeding
    and reading the model (frames, points, precision) is `self.io`, a
    `taptr.model_io.ModelIO`, shared with the online tracker. A `taptr.evaluation.PointTracker`.
    """

    #: `track(..., pad_queries=N)` pads the queries (the official evaluation's 800).
    supports_query_padding = True

    def __init__(self, model, device=None, dtype=None, backend: str | None = None,
                 options=None, tune_allocator: bool = False):
        from taptr.backends import as_backend, resolve_backend
        from taptr.export.onnx_runtime import OnnxTAPTRv2

        if backend is None:
            backend = "onnxruntime" if isinstance(model, OnnxTAPTRv2) else "pytorch"
        backend = resolve_backend(backend)
        if backend == "onnxruntime":
            if dtype not in (None, "fp32", torch.float32):
                raise TaptrError(f"the onnxruntime backend runs in fp32 only, not {dtype}")
            device = "cpu" if device is None else device
        self.backend = backend
        self.io = ModelIO(as_backend(model, backend), device, dtype,
                          tracking_options(model, options), tune_allocator)

    @classmethod
    def from_pretrained(cls, name_or_path=None, device=None, dtype=None,
                        backend: str | None = None, options=None,
                        tune_allocator: bool = False) -> "Tracker":
        """Load a registered name (None = the default), our `.safetensors` file, an official
        `.pth` checkpoint, or a folder written by `taptr export` (`taptr.load_model`) (backend None: onnxruntime
        for such a folder, pytorch otherwise). options: as for `Tracker`."""
        from taptr.backends import resolve_backend

        backend = resolve_backend(backend, name_or_path)
        return cls(load_model(name_or_path), device, dtype, backend, options, tune_allocator)

    @property
    def model(self):
        """The network (an inference-optimised copy of the one given)."""
        return self.io.model

    @property
    def device(self) -> torch.device:
        return self.io.device

    @property
    def config(self):
        return self.io.config

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input (H_in, W_in)."""
        return self.io.input_size

    def __repr__(self) -> str:
        height, width = self.input_size
        return (f"Tracker({self.config.name}, input {width}x{height}, {self.device}, "
                f"{self.io.precision}, {self.backend})")

    # ------------------------------------------------------------------ offline tracking
    def track(self, video, queries=None, grid=None, grid_frame: int = 0, mask=None,
              backward: bool = True, point_chunk: int | None = None, pad_queries: int = 0,
              progress: bool = True, fps: float | None = None) -> TrackResult:
        """Track points through a whole video.

        video: a file path (mp4, mov, avi, webm, mkv, gif, ...), a folder of images, a uint8
            array [T, H, W, 3], a tensor, or a `VideoSource`.
        queries: [N, 3] rows (t, x, y) in pixels of the video, any frame t.
        grid, grid_frame, mask: a grid x grid lattice of points on `grid_frame`, optionally only
            where `mask` (image path or [H, W] array) is non-zero. Added after `queries`.
            Neither queries nor grid: a 10 x 10 grid on frame 0.
        backward: also track frames before each query frame (on the time-reversed video).
        point_chunk: points per chunk inside the model (memory knob; exact, None = automatic).
        pad_queries: pad each pass to this many queries with static random points, as the
            official evaluation does (800); 0 = off. Padding points are not returned.
        progress: show a progress bar. fps: override the video's frame rate.
        Returns a `TrackResult` (tracks [N, T, 2], visible [N, T], visibility [N, T], ...).
        """
        source = open_video(video, fps)
        queries = build_queries(source, queries, grid, grid_frame, mask)
        num_points, num_frames = len(queries), source.num_frames
        query_frames = queries[:, 0].astype(np.int64)
        tracks = np.repeat(queries[:, None, 1:], num_frames, axis=1)  # [N, T, 2]
        visibility = np.zeros((num_points, num_frames), np.float32)
        backward_points = np.flatnonzero(query_frames > 0) if backward else np.zeros(0, int)
        backward_frames = (int(query_frames[backward_points].max()) + 1
                           if len(backward_points) else 0)
        total = num_frames - int(query_frames.min()) + backward_frames
        options = dict(point_chunk=point_chunk, pad_queries=pad_queries)
        with tqdm(total=total, unit="frame", desc="tracking", disable=not progress,
                  leave=False) as bar:
            self._forward(source, queries, tracks, visibility, bar, **options)
            if len(backward_points):
                self._backward(source, queries, backward_points, tracks, visibility, bar,
                               **options)
        points = np.arange(num_points)
        tracks[points, query_frames] = queries[:, 1:]
        visibility[points, query_frames] = 1.0
        return TrackResult(tracks.astype(np.float32), visibility > self.io.visible_threshold,
                           visibility, queries, source.size, source.fps, backward, source)

    def _forward(self, source, queries, tracks, visibility, bar, **options) -> None:
        """Frames from the earliest query frame on; fills each point from its query frame."""
        query_frames = queries[:, 0].astype(np.int64)
        start = int(query_frames.min())
        frames = (self.io.prepare_frame(f) for f in source.iter_frames(start))
        for out in self._run_pass(frames, source.num_frames - start, queries[:, 1:],
                                  query_frames - start, source.size, bar, **options):
            index = start + out.start + np.arange(len(out.positions))
            _fill(tracks, visibility, index, index[None, :] >= query_frames[:, None], out)

    def _backward(self, source, queries, points, tracks, visibility, bar, **options) -> None:
        """The time-reversed video from the latest query frame of `points` [n] down to frame 0;
        fills each of those points before its query frame."""
        query_frames = queries[points, 0].astype(np.int64)
        length = int(query_frames.max()) + 1
        frames = source.iter_frames_reversed(length, self.io.prepare_frame)
        for out in self._run_pass(frames, length, queries[points, 1:],
                                  length - 1 - query_frames, source.size, bar, **options):
            index = length - 1 - (out.start + np.arange(len(out.positions)))
            _fill(tracks, visibility, index, index[None, :] < query_frames[:, None], out, points)

    def track_many(self, videos, queries=None, grid=None, grid_frame: int = 0, mask=None,
                   backward: bool = True, point_chunk: int | None = None,
                   pad_queries: int = 0, progress: bool = True):
        """Track the same queries (or grid) through many videos with this one model; an
        iterator of `taptr.track_many.VideoOutcome`, one per video in order: `.video` (path
        and result name), `.result` (a `TrackResult`, None on failure), `.error` (the
        one-line reason, None on success), `.seconds`.

        videos: a video file, a folder (searched recursively; a folder of images is one
            video), a glob pattern, a .txt list of paths, or a list of these
            (`taptr.io.inputs`). Raises `TaptrError` at once for a spec that names nothing.
        A video that fails (unreadable, empty, queries outside it, a mask of the wrong size)
        yields its error and the iteration goes on. Other arguments: as for `track`; a mask
        path is read once. progress: a bar over videos (and one over each video's frames).
        """
        from taptr.queries import read_mask_image
        from taptr.track_many import as_inputs, iter_track

        inputs = as_inputs(videos)
        if isinstance(mask, (str, Path)):
            mask = read_mask_image(mask)
        kwargs = {"queries": queries, "grid": grid, "grid_frame": grid_frame, "mask": mask,
                  "backward": backward, "point_chunk": point_chunk, "pad_queries": pad_queries}
        return iter_track(self, inputs, kwargs, progress=progress)

    # ------------------------------------------------------------------ streaming
    def stream(self, queries=None, num_frames: int | None = None,
               point_chunk: int | None = None, options=None) -> OnlineTracker:
        """An online tracker: push frames one at a time, get tracks as soon as they are final.

        options: as for `Tracker` (None: this tracker's; the kernels are this tracker's).
        See `taptr.streaming.OnlineTracker`.
        """
        if options is not None:
            options = tracking_options(self.io.model, options)
        return OnlineTracker(self.io, queries, num_frames=num_frames, point_chunk=point_chunk,
                             options=options)

    # ------------------------------------------------------------------ one pass
    def _run_pass(self, frames, num_frames: int, points_px: np.ndarray, query_frames: np.ndarray,
                  video_size, bar, point_chunk: int | None, pad_queries: int):
        """Track points [n, 2] (pixels) with query frames [n] (relative to the pass's first
        frame) through prepared frames; yields `PixelChunk`s of final frames."""
        num_points = len(points_px)
        points = self.io.model_points(points_px, video_size)
        frame_ids = torch.from_numpy(query_frames.astype(np.int64))[None].to(self.device)
        if pad_queries > num_points:
            extra_points, extra_frames = padding_points(pad_queries - num_points, num_frames,
                                                        self.input_size)
            points = torch.cat((points, extra_points.to(self.device)), 1)
            frame_ids = torch.cat((frame_ids, extra_frames.to(self.device)), 1)
        return self.io.run(frames, num_frames, points, frame_ids, video_size, num_points,
                           point_chunk, on_frames=bar.update)


def tracking_options(model, options=None):
    """The `TrackingOptions` a tracker of `model` uses: `options` itself, or the model's
    defaults (`default_options`; `TrackingOptions()` without) changed by a dict `options`."""
    from taptr.models.options import TrackingOptions

    if isinstance(options, TrackingOptions):
        return options
    defaults = getattr(model, "default_options", None) or TrackingOptions()
    if options is None:
        return defaults
    if not isinstance(options, dict):
        raise TaptrError(f"options must be TrackingOptions or a dict, not {type(options).__name__}")
    return defaults.replace(**options)


def _fill(tracks, visibility, index, keep, out: PixelChunk, points=None) -> None:
    """Write a pass's frames `index` [t] where `keep` [n, t] into tracks [N, T, 2] and
    visibility [N, T]; `points` [n] selects the rows (all when None)."""
    rows = np.arange(tracks.shape[0]) if points is None else points
    cells = np.ix_(rows, index)
    tracks[cells] = np.where(keep[..., None], out.positions.transpose(1, 0, 2), tracks[cells])
    visibility[cells] = np.where(keep, out.visibility.T, visibility[cells])


def padding_points(count: int, num_frames: int, input_size: tuple[int, int],
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Official-style padding queries: static random points away from the border.

    Returns model coordinates [1, count, 2] and query frames [1, count], each frame drawn from
    0..PADDING_RESTART_FRAMES (clipped to the pass), a margin of 1/16 of the input size.
    """
    generator = np.random.default_rng(seed)
    height, width = input_size
    margin = np.array([width, height]) / 16.0
    upper = np.array([width - 1, height - 1]) - margin
    pixels = margin + generator.random((count, 2)) * (upper - margin)
    frames = np.minimum(generator.integers(0, PADDING_RESTART_FRAMES + 1, count), num_frames - 1)
    model = coords.input_to_model(pixels, (width, height))
    return (torch.from_numpy(model).float()[None],
            torch.from_numpy(frames.astype(np.int64))[None])
