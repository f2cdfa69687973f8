"""Collate tracking samples into the tensors the network and the losses take.

A sample is anything with the `TrackingSample` fields (numpy arrays or torch tensors):
`video` uint8 [T, H, W, 3], `tracks` float32 [T, N, 2] pixels (centres at integers),
`visible` bool [T, N], `query_frames` int64 [N]. Samples of one batch share T; their frame
sizes and point counts may differ (videos are resized to the network input, point sets are
padded and flagged in `valid`). Frames go through `taptr.preprocess.prepare_frames`, the
tracker's own path, so training sees the numbers inference sees.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from taptr import coords
from taptr.errors import TaptrError
from taptr.preprocess import prepare_frames


def _as_tensor(values, dtype: torch.dtype, device) -> torch.Tensor:
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(np.require(values, requirements=("C", "W")))
    return torch.as_tensor(values).to(device=device, dtype=dtype)


def make_batch(
    samples: Sequence, input_size: tuple[int, int], device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """Stack samples into a network batch.

    input_size: (H_in, W_in), as `ModelConfig.input_size`. device: where the tensors go
    (default: where the first sample's video lives). Returns
    * `video` [B, T, 3, H_in, W_in] float32, ImageNet-normalised RGB;
    * `tracks` [B, T, N, 2] model coordinates (u, v) = (x_in/(W_in-1), y_in/(H_in-1));
    * `visible` [B, T, N] bool;
    * `query_frames` [B, N] int64;
    * `query_points` [B, N, 2] model coordinates: the tracks at each point's query frame;
    * `valid` [B, N] bool: False on padding points (samples with fewer than N points).
    Padding points copy nothing: position 0, not visible, query frame 0, never supervised.
    """
    if not samples:
        raise TaptrError("make_batch needs at least one sample")
    if device is None:
        first_video = samples[0].video
        device = first_video.device if isinstance(first_video, torch.Tensor) else "cpu"
    num_frames = int(samples[0].video.shape[0])
    max_points = max(int(sample.tracks.shape[1]) for sample in samples)
    height_in, width_in = int(input_size[0]), int(input_size[1])

    videos, tracks, visible, query_frames, valid = [], [], [], [], []
    for sample in samples:
        video = _as_tensor(sample.video, torch.uint8, device)  # [T, H, W, 3]
        if video.ndim != 4 or video.shape[-1] != 3:
            raise TaptrError(f"sample video must be [T, H, W, 3], got {tuple(video.shape)}")
        if video.shape[0] != num_frames:
            raise TaptrError("all samples of a batch must have the same number of frames")
        height, width = int(video.shape[1]), int(video.shape[2])
        videos.append(prepare_frames(video, (height_in, width_in)))  # exactly as the tracker

        sample_tracks = _as_tensor(sample.tracks, torch.float32, device)  # [T, n, 2]
        sample_visible = _as_tensor(sample.visible, torch.bool, device)  # [T, n]
        sample_queries = _as_tensor(sample.query_frames, torch.int64, device)  # [n]
        num_points = int(sample_tracks.shape[1])
        if tuple(sample_tracks.shape) != (num_frames, num_points, 2):
            raise TaptrError(f"sample tracks must be [T, N, 2], got {tuple(sample_tracks.shape)}")
        if tuple(sample_visible.shape) != (num_frames, num_points):
            raise TaptrError("sample visible must be [T, N] like its tracks")
        if sample_queries.numel() and (
            int(sample_queries.min()) < 0 or int(sample_queries.max()) >= num_frames
        ):
            raise TaptrError("query frames must lie in [0, T)")
        model_tracks = coords.pixel_to_model(
            sample_tracks, (width, height), (width_in, height_in)
        )
        padding = max_points - num_points
        tracks.append(F.pad(model_tracks, (0, 0, 0, padding)))
        visible.append(F.pad(sample_visible, (0, padding), value=False))
        query_frames.append(F.pad(sample_queries, (0, padding), value=0))
        valid.append(torch.arange(max_points, device=device) < num_points)

    tracks_batch = torch.stack(tracks)  # [B, T, N, 2]
    query_frames_batch = torch.stack(query_frames)  # [B, N]
    gather_index = query_frames_batch[:, None, :, None].expand(-1, 1, -1, 2)
    query_points = tracks_batch.gather(1, gather_index)[:, 0]  # [B, N, 2]
    return {
        "video": torch.stack(videos).contiguous(),
        "tracks": tracks_batch,
        "visible": torch.stack(visible),
        "query_frames": query_frames_batch,
        "query_points": query_points,
        "valid": torch.stack(valid),
    }
