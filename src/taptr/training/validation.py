"""Held-out evaluation during training: the model's forward pass scored by TAP-Vid metrics.

Queries are the samples' own (any frame); the network tracks forward from each query frame, so
the score uses tapnet's `first` mode (frames strictly after the query frame). Positions are
compared in the 256x256 metric frame. Reported: AJ (average Jaccard), delta_avg (average
fraction within 1-16 px) and OA (occlusion accuracy), each the mean over clips.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from taptr import coords
from taptr.device import autocast
from taptr.model_io import VISIBLE_THRESHOLD
from taptr.evaluation.metrics import compute_tapvid_metrics
from taptr.training.batch import make_batch

METRIC_KEYS = {"AJ": "average_jaccard", "delta_avg": "average_pts_within_thresh",
               "OA": "occlusion_accuracy"}


def _to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)


def score_sample(sample, positions: torch.Tensor, visible_probability: torch.Tensor,
                 input_size: tuple[int, int]) -> dict[str, float]:
    """TAP-Vid metrics of one clip.

    sample: a `TrackingSample` (tracks [T, N, 2] pixels, visible [T, N], query_frames [N]).
    positions: [T, n, 2] predicted model coordinates (n >= N, padding after the real points).
    visible_probability: [T, n]. input_size: (H_in, W_in) of the network.
    """
    height, width = int(sample.video.shape[1]), int(sample.video.shape[2])
    num_points = int(sample.tracks.shape[1])
    predicted_pixels = coords.model_to_pixel(
        positions[:, :num_points].float().cpu(), (width, height), (input_size[1], input_size[0])
    )
    return score_pixels(sample, predicted_pixels, visible_probability[:, :num_points])


def score_pixels(sample, predicted_pixels: torch.Tensor,
                 visible_probability: torch.Tensor) -> dict[str, float]:
    """TAP-Vid metrics (first mode, 256x256 metric frame) of predicted tracks of one clip.

    predicted_pixels: [T, N, 2] (x, y) pixels of the clip; visible_probability: [T, N]
    (visible where > VISIBLE_THRESHOLD, 0.5).
    """
    height, width = int(sample.video.shape[1]), int(sample.video.shape[2])
    gt_pixels = torch.as_tensor(_to_numpy(sample.tracks), dtype=torch.float32)
    video_size = (width, height)
    gt_metric = _to_numpy(coords.pixel_to_metric(gt_pixels, video_size)).transpose(1, 0, 2)
    pred_metric = _to_numpy(coords.pixel_to_metric(predicted_pixels.float().cpu(),
                                                   video_size)).transpose(1, 0, 2)
    query_frames = _to_numpy(sample.query_frames).astype(np.float64)
    query_points = np.stack([query_frames, np.zeros_like(query_frames),
                             np.zeros_like(query_frames)], axis=-1)  # (t, y, x); only t is read
    gt_occluded = ~_to_numpy(sample.visible).astype(bool).T
    pred_occluded = (_to_numpy(visible_probability.float()) <= VISIBLE_THRESHOLD).T
    metrics = compute_tapvid_metrics(query_points[None], gt_occluded[None], gt_metric[None],
                                     pred_occluded[None], pred_metric[None], query_mode="first")
    return {short: float(metrics[key][0]) for short, key in METRIC_KEYS.items()}


@torch.no_grad()
def evaluate_samples(model: nn.Module, samples: Sequence, input_size: tuple[int, int],
                     device: torch.device, autocast_dtype: torch.dtype | None = None,
                     batch_size: int = 1) -> dict[str, float]:
    """Mean AJ, delta_avg and OA of `model` (in eval mode for the call) over `samples`."""
    was_training = model.training
    model.eval()
    per_clip: list[dict[str, float]] = []
    try:
        for first in range(0, len(samples), batch_size):
            chunk = samples[first:first + batch_size]
            batch = make_batch(chunk, input_size, device=device)
            with autocast(device, autocast_dtype):
                output = model(batch["video"], batch["query_points"], batch["query_frames"])
            visibility = torch.sigmoid(output.vis_logits[..., 1].float())
            for index, sample in enumerate(chunk):
                per_clip.append(score_sample(sample, output.positions[index],
                                             visibility[index], input_size))
    finally:
        model.train(was_training)
    return {name: float(np.nanmean([clip[name] for clip in per_clip])) for name in METRIC_KEYS}

