"""Round trip on real video (no ground truth needed): forward to the end, then back.

For each clip, a 10x10 grid on frame 0 is tracked to the last frame; the end positions are then
tracked on the time-reversed clip back to frame 0. A tracker that follows the scene brings each
point back where it started. Reported per tracker and clip, over points visible at the end of
both passes ("kept visible"): the median return error (pixels) and the median forward path
length (pixels, sum of per-frame moves); a tracker that holds points still returns perfectly
with a path of 0, so both numbers matter.

    python benchmarks/real_video_roundtrip.py --videos ../shared/videos [--weights W] [--trackers taptr,dis]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def load_frames(path: Path) -> np.ndarray:
    from taptr.io.video import open_video

    source = open_video(str(path))
    try:
        return source.read_frames()
    finally:
        source.close()


def make_tracker(name: str, weights: str | None):
    if name == "taptr":
        from taptr import Tracker

        tracker = Tracker.from_pretrained(weights)
        return lambda frames, queries: tracker.track(frames, queries=queries, backward=False,
                                                     progress=False)
    from taptr.evaluation.baselines import make_baseline

    baseline = make_baseline(name)
    return lambda frames, queries: baseline.track(frames, queries.astype(np.float32))


def round_trip(track, frames: np.ndarray, grid: int = 10) -> tuple[float, float, int]:
    """(median return error px, median forward path px, points kept visible)."""
    height, width = frames.shape[1:3]
    xs = (np.arange(grid) + 0.5) * width / grid
    ys = (np.arange(grid) + 0.5) * height / grid
    start = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    queries = np.concatenate([np.zeros((len(start), 1)), start], 1)
    forward = track(frames, queries)
    tracks, visible = np.asarray(forward.tracks), np.asarray(forward.visible)
    end = tracks[:, -1]
    back = track(np.ascontiguousarray(frames[::-1]),
                 np.concatenate([np.zeros((len(end), 1)), end], 1))
    returned, back_visible = np.asarray(back.tracks)[:, -1], np.asarray(back.visible)[:, -1]
    kept = visible[:, -1] & back_visible
    error = np.linalg.norm(returned - start, axis=-1)
    path = np.linalg.norm(np.diff(tracks, axis=1), axis=-1).sum(1)
    if not kept.any():
        return float("nan"), float("nan"), 0
    return float(np.median(error[kept])), float(np.median(path[kept])), int(kept.sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default="../shared/videos", help="folder of .mp4 clips")
    parser.add_argument("--weights", default=None, help="taptr weights (default: bundled)")
    parser.add_argument("--trackers", default="taptr,dis")
    args = parser.parse_args()
    clips = sorted(Path(args.videos).glob("*.mp4"))
    if not clips:
        print(f"no .mp4 clips in {args.videos}", file=sys.stderr)
        return 2
    print("| clip | tracker | median return error (px) | median path (px) | kept visible |")
    print("|---|---|---:|---:|---:|")
    for clip in clips:
        frames = load_frames(clip)
        for name in args.trackers.split(","):
            error, path, kept = round_trip(make_tracker(name, args.weights), frames)
            print(f"| {clip.name} | {name} | {error:.1f} | {path:.1f} | {kept} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
