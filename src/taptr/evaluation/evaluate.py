"""The TAP-Vid evaluation loop: sample queries, run a tracker, score every video, average.

Protocol (tapnet's; docs/evaluation.md, "Protocol, exactly"):
* the tracker sees the frames resized to 256x256 (or at native resolution) and queries in
  pixels of those frames (`taptr.coords.tapvid_to_pixel`);
* its predictions are rescaled to the 256x256 metric frame (`taptr.coords.pixel_to_metric`),
  ground truth is `u * 256` (`taptr.coords.tapvid_to_metric`);
* each video is scored on its own (`compute_tapvid_metrics`), the dataset score is the plain
  mean over videos.
`scale_255=True` switches to the CoTracker / official TAPTR convention (queries `u * (W - 1)`,
ground truth `u * 255`); `pad_queries` applies to trackers that support it (a tracker is a
`taptr.evaluation.trackers.PointTracker`).

Under `torchrun` (env WORLD_SIZE > 1) rank r evaluates videos r, r + world, ... and the
per-video records are gathered on every rank with `torch.distributed.all_gather_object` (gloo).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from taptr import coords

if TYPE_CHECKING:  # torch is imported only when evaluating
    from taptr.distributed import DistributedContext
from taptr.evaluation.datasets import (
    METRIC_RESOLUTION,
    TapVidSource,
    decode_entry,
    resize_video,
    sample_queries,
)
from taptr.evaluation.metrics import METRIC_NAMES, QUERY_MODES, compute_tapvid_metrics
from taptr.evaluation.trackers import PointTracker

RESOLUTIONS = ("256", "native")


@dataclass
class EvalProtocol:
    """Everything that decides the numbers besides the tracker's weights.

    query_mode: 'first' or 'strided'. resolution: '256' (frames resized to 256x256, the
    official protocol) or 'native'. scale_255: CoTracker/official-TAPTR coordinates (x255)
    instead of tapnet's (x256). pad_queries: pad the queries to this many (trackers whose
    `supports_query_padding` is True only).
    """

    query_mode: str = "first"
    resolution: str = "256"
    scale_255: bool = False
    pad_queries: int | None = None

    def __post_init__(self):
        if self.query_mode not in QUERY_MODES:
            raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {self.query_mode!r}")
        if str(self.resolution) not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution!r}")
        self.resolution = str(self.resolution)

    @property
    def metric_scale(self) -> float:
        """Multiplier from normalised TAP-Vid coordinates to the metric frame: 256 or 255."""
        return 255.0 if self.scale_255 else float(METRIC_RESOLUTION)

    def tracker_frame_size(self, native_size: tuple[int, int]) -> tuple[int, int]:
        """(W, H) of the frames given to the tracker."""
        if self.resolution == "native":
            return native_size
        return (METRIC_RESOLUTION, METRIC_RESOLUTION)

    def queries_to_pixels(self, points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
        """Normalised TAP-Vid (x, y) [..., 2] -> pixels of the tracker's frames."""
        if self.scale_255:
            return coords.tapvid_to_pixel_aligned(points, frame_size)
        return coords.tapvid_to_pixel(points, frame_size)

    def predictions_to_metric(self, points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
        """Tracker pixels (x, y) [..., 2] -> the metric frame."""
        if self.scale_255:
            return coords.pixel_aligned_to_metric(points, frame_size, self.metric_scale)
        return coords.pixel_to_metric(points, frame_size, self.metric_scale)


def tracker_keywords(tracker: PointTracker, protocol: EvalProtocol) -> dict:
    """Keywords for `tracker.track`: the protocol's query padding where the tracker supports
    it (else 0), and `progress=False` (the loop shows its own per-video bar). Raises
    `TypeError` for an object that is not a `PointTracker`."""
    if not isinstance(tracker, PointTracker):
        raise TypeError(f"{type(tracker).__name__} is not a PointTracker (supports_query_padding, "
                        "track): see taptr.evaluation.trackers.PointTracker")
    pad = protocol.pad_queries if tracker.supports_query_padding else None
    return {"pad_queries": pad or 0, "progress": False}


def _as_numpy(value) -> np.ndarray:
    """A numpy array from numpy or torch output."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def run_tracker(tracker, frames: np.ndarray, queries_txy: np.ndarray, **extra):
    """Call `tracker.track` and check its output.

    frames uint8 [T, H, W, 3]; queries_txy [Q, 3] (t, x, y) pixels of `frames`.
    Returns tracks float64 [Q, T, 2] (x, y) pixels and visible bool [Q, T].
    """
    result = tracker.track(frames, queries=queries_txy, **extra)
    tracks = _as_numpy(result.tracks).astype(np.float64)
    visible = _as_numpy(result.visible).astype(bool)
    expected = (queries_txy.shape[0], frames.shape[0])
    if tracks.shape != (*expected, 2) or visible.shape != expected:
        raise RuntimeError(
            f"tracker returned tracks {list(tracks.shape)} / visible {list(visible.shape)}, "
            f"expected [{expected[0]}, {expected[1]}, 2] / [{expected[0]}, {expected[1]}]"
        )
    return tracks, visible


def evaluate_video(tracker, video, protocol: EvalProtocol, track_kwargs: Mapping) -> dict | None:
    """Score one `TapVidVideo`; None when it yields no query.

    Returns a flat record: name, num_frames, width, height, num_queries, every metric of
    `METRIC_NAMES` (a float in [0, 1], NaN where undefined) and seconds (tracker time).
    """
    queries = sample_queries(video.occluded, video.points, protocol.query_mode)
    if len(queries) == 0:
        return None
    frame_size = protocol.tracker_frame_size(video.size)
    frames = resize_video(video.video, frame_size)
    query_xy = protocol.queries_to_pixels(queries.query_xy.astype(np.float64), frame_size)
    queries_txy = np.concatenate([queries.query_points[:, :1], query_xy], axis=1)

    start = time.perf_counter()
    # float64 queries: exact for the static baseline; model trackers convert to float32.
    tracks, visible = run_tracker(tracker, frames, queries_txy, **track_kwargs)
    seconds = time.perf_counter() - start

    scale = protocol.metric_scale
    metrics = compute_tapvid_metrics(
        query_points=(queries.query_points * np.array([1.0, scale, scale]))[None],
        gt_occluded=queries.occluded[None],
        gt_tracks=coords.tapvid_to_metric(queries.target_points.astype(np.float64), scale)[None],
        pred_occluded=~visible[None],
        pred_tracks=protocol.predictions_to_metric(tracks, frame_size)[None],
        query_mode=protocol.query_mode,
    )
    record = {
        "name": video.name,
        "num_frames": int(video.video.shape[0]),
        "width": video.size[0],
        "height": video.size[1],
        "num_queries": len(queries),
    }
    record.update({name: float(metrics[name][0]) for name in METRIC_NAMES})
    record["seconds"] = seconds
    return record


def average_metrics(records: Iterable[Mapping]) -> dict[str, float]:
    """Plain mean over videos of every metric (tapnet: NaN in any video gives NaN)."""
    records = list(records)
    if not records:
        return {name: math.nan for name in METRIC_NAMES}
    return {name: float(np.mean([r[name] for r in records])) for name in METRIC_NAMES}


def evaluate(
    tracker,
    data: str | os.PathLike | TapVidSource,
    protocol: EvalProtocol | None = None,
    *,
    tracker_name: str | None = None,
    weights: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    distributed: DistributedContext | None = None,
) -> dict:
    """Evaluate `tracker` on a TAP-Vid file or directory.

    tracker: a `taptr.evaluation.trackers.PointTracker` (`taptr.Tracker`, the baselines of
    `taptr.evaluation.baselines`); anything else raises `TypeError`.
    limit: only the first `limit` videos. distributed: this process's share (default: all).

    Returns {"protocol": {...}, "metrics": {name: mean over videos}, "num_videos",
    "seconds" (tracker time summed over videos), "wall_seconds", "per_video": [records in data
    order], "skipped_videos": [names without any query]}.
    """
    protocol = protocol or EvalProtocol()
    if distributed is None:
        from taptr.distributed import DistributedContext

        distributed = DistributedContext()
    source = data if isinstance(data, TapVidSource) else TapVidSource(data)
    track_kwargs = tracker_keywords(tracker, protocol)
    pad_applied = track_kwargs["pad_queries"] > 0

    total = source.known_length
    if limit is not None:
        total = limit if total is None else min(total, limit)
    bar = _progress_bar(total, enabled=progress and distributed.rank == 0)
    start = time.perf_counter()
    records, skipped = [], []
    for index, (name, entry) in enumerate(source):
        if limit is not None and index >= limit:
            break
        if not distributed.takes(index):
            continue
        bar.set_description(name[:24])
        record = evaluate_video(tracker, decode_entry(name, entry), protocol, track_kwargs)
        if record is None:
            skipped.append((index, name))
        else:
            records.append((index, record))
            bar.set_postfix(AJ=f"{100 * record['average_jaccard']:.1f}")
        bar.update(distributed.world_size)
    bar.close()

    records = [record for _, record in sorted(distributed.gather_lists(records), key=_first)]
    skipped = [name for _, name in sorted(distributed.gather_lists(skipped), key=_first)]
    return {
        "protocol": {
            **asdict(protocol),
            "pad_queries_applied": pad_applied,
            "metric_resolution": METRIC_RESOLUTION,
            "scale": protocol.metric_scale,
            "tracker": tracker_name or getattr(tracker, "name", type(tracker).__name__),
            "weights": weights,
            "data": str(source.path),
            "data_format": source.describe(),
            "limit": limit,
            "world_size": distributed.world_size,
        },
        "metrics": average_metrics(records),
        "num_videos": len(records),
        "seconds": float(sum(record["seconds"] for record in records)),
        "wall_seconds": time.perf_counter() - start,
        "per_video": records,
        "skipped_videos": skipped,
    }


def _first(pair):
    return pair[0]


def _progress_bar(total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="video", disable=not enabled, file=sys.stderr, leave=False)
