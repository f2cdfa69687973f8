"""TAP-Vid metrics with tapnet's exact definitions (`compute_tapvid_metrics`).

Written from tapnet's definitions (docs/architecture.md, section 7.1): strict
thresholds d < delta for delta in 1, 2, 4, 8, 16 pixels of a 256x256 frame, query frames (and,
in `first` mode, every earlier frame) excluded, cells pooled over the queries of one video.
Zero denominators give NaN, as in tapnet.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = (1, 2, 4, 8, 16)
QUERY_MODES = ("first", "strided")

#: Every key `compute_tapvid_metrics` returns, in the order tables print them.
METRIC_NAMES = (
    "average_jaccard",
    "average_pts_within_thresh",
    "occlusion_accuracy",
    *(f"jaccard_{delta}" for delta in THRESHOLDS),
    *(f"pts_within_{delta}" for delta in THRESHOLDS),
)


def evaluation_mask(query_frames: np.ndarray, num_frames: int, query_mode: str) -> np.ndarray:
    """Which (query, frame) cells are scored.

    query_frames: [..., N] frame index of each query (rounded to the nearest integer).
    Returns bool [..., N, T]: `first` scores frames strictly after the query frame, `strided`
    every frame but the query frame.
    """
    if query_mode not in QUERY_MODES:
        raise ValueError(f"unknown query mode {query_mode!r} (expected 'first' or 'strided')")
    frame_index = np.arange(num_frames)
    query_index = np.round(np.asarray(query_frames, dtype=np.float64)).astype(np.int64)[..., None]
    if query_mode == "first":
        return frame_index > query_index
    return frame_index != query_index


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, NaN (no warning) where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator.astype(np.float64) / denominator.astype(np.float64)


def compute_tapvid_metrics(
    query_points: np.ndarray,
    gt_occluded: np.ndarray,
    gt_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    pred_tracks: np.ndarray,
    query_mode: str,
    get_trackwise_metrics: bool = False,
) -> dict[str, np.ndarray]:
    """TAP-Vid occlusion accuracy, position accuracy and Jaccard, one value per video.

    All positions are pixels of the 256x256 metric frame (see `taptr.coords`).

    query_points: [B, N, 3] rows (t, y, x); only t is used.
    gt_occluded: bool [B, N, T], True = not visible.
    gt_tracks: [B, N, T, 2] (x, y).
    pred_occluded: bool [B, N, T].
    pred_tracks: [B, N, T, 2] (x, y).
    query_mode: 'first' (score frames after the query frame) or 'strided' (all but the query
        frame).
    get_trackwise_metrics: return one value per track ([B, N]) instead of per video ([B]).

    Returns a dict with float64 arrays of shape [B] (or [B, N]): occlusion_accuracy,
    pts_within_{1,2,4,8,16}, jaccard_{1,2,4,8,16}, average_jaccard, average_pts_within_thresh.
    """
    gt_tracks = np.asarray(gt_tracks, dtype=np.float64)
    pred_tracks = np.asarray(pred_tracks, dtype=np.float64)
    gt_visible = ~np.asarray(gt_occluded, dtype=bool)
    pred_visible = ~np.asarray(pred_occluded, dtype=bool)
    num_frames = gt_tracks.shape[2]
    scored = evaluation_mask(np.asarray(query_points)[..., 0], num_frames, query_mode)
    axes = (2,) if get_trackwise_metrics else (1, 2)

    def count(cells: np.ndarray) -> np.ndarray:
        return np.sum(cells & scored, axis=axes)

    metrics: dict[str, np.ndarray] = {
        "occlusion_accuracy": _ratio(count(gt_visible == pred_visible), count(np.ones_like(scored)))
    }
    squared_distance = np.sum(np.square(pred_tracks - gt_tracks), axis=-1)
    gt_positive_count = count(gt_visible)
    position_accuracies, jaccards = [], []
    for delta in THRESHOLDS:
        within = squared_distance < delta * delta
        position_accuracy = _ratio(count(gt_visible & within), gt_positive_count)
        true_positives = count(gt_visible & within & pred_visible)
        false_positives = count(pred_visible & ~(gt_visible & within))
        jaccard = _ratio(true_positives, gt_positive_count + false_positives)
        metrics[f"pts_within_{delta}"] = position_accuracy
        metrics[f"jaccard_{delta}"] = jaccard
        position_accuracies.append(position_accuracy)
        jaccards.append(jaccard)
    metrics["average_jaccard"] = np.mean(np.stack(jaccards), axis=0)
    metrics["average_pts_within_thresh"] = np.mean(np.stack(position_accuracies), axis=0)
    return metrics
