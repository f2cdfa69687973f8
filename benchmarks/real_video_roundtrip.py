"""Round trip on real video (no ground truth needed): forward to the end, then back.

For each clip, a 10x10 grid on frame 0 is tracked to the last frame; the end positions
(clipped into the frame) are then tracked on the time-reversed clip back to frame 0. A tracker
that follows the scene brings each point back where it started. Reported per tracker and clip,
over ALL 100 points whatever their visibility (the project's measure: a tracker cannot improve
it by calling hard points occluded): the median return error (pixels, native resolution) and
the median movement |end - start| (pixels; a tracker that holds points still returns perfectly
with a movement of 0, so both numbers matter); then, as before 2026-12-08, over the points
visible at the end of both passes ("kept"): their median return error and median path length
(sum of per-frame moves) and how many they are.

    python benchmarks/real_video_roundtrip.py --videos ../shared/videos [--weights W]
        [--trackers taptr,dis] [--option flow_prior=off] [--threads 1]
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


def make_tracker(name: str, weights: str | None, options: list[str] | None = None):
    if name == "taptr":
        from taptr import Tracker
        from taptr.models import TrackingOptions

        changes = None
        if options:
            parsed = TrackingOptions().with_overrides(options)
            changes = {item.partition("=")[0].strip(): None for item in options}
            changes = {key: getattr(parsed, key) for key in changes}
        tracker = Tracker.from_pretrained(weights, options=changes)
        return lambda frames, queries: tracker.track(frames, queries=queries, backward=False,
                                                     progress=False)
    from taptr.evaluation.baselines import make_baseline

    baseline = make_baseline(name)
    return lambda frames, queries: baseline.track(frames, queries.astype(np.float32))


def round_trip(track, frames: np.ndarray, grid: int = 10) -> dict:
    """{"error", "movement"}: medians over all points; {"kept_error", "kept_path", "kept"}:
    over the points visible at both ends (NaN medians when none is)."""
    height, width = frames.shape[1:3]
    xs = (np.arange(grid) + 0.5) * width / grid
    ys = (np.arange(grid) + 0.5) * height / grid
    start = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    queries = np.concatenate([np.zeros((len(start), 1)), start], 1)
    forward = track(frames, queries)
    tracks, visible = np.asarray(forward.tracks), np.asarray(forward.visible)
    end = tracks[:, -1]
    inside = np.clip(end, -0.5, np.array([width, height]) - 0.5)
    back = track(np.ascontiguousarray(frames[::-1]),
                 np.concatenate([np.zeros((len(end), 1)), inside], 1))
    returned, back_visible = np.asarray(back.tracks)[:, -1], np.asarray(back.visible)[:, -1]
    kept = visible[:, -1] & back_visible
    error = np.linalg.norm(returned - start, axis=-1)
    path = np.linalg.norm(np.diff(tracks, axis=1), axis=-1).sum(1)
    result = {"error": float(np.median(error)),
              "movement": float(np.median(np.linalg.norm(end - start, axis=-1))),
              "kept": int(kept.sum())}
    result["kept_error"] = float(np.median(error[kept])) if kept.any() else float("nan")
    result["kept_path"] = float(np.median(path[kept])) if kept.any() else float("nan")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default="../shared/videos", help="folder of .mp4 clips")
    parser.add_argument("--weights", default=None, help="taptr weights (default: bundled)")
    parser.add_argument("--trackers", default="taptr,dis")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a tracking option of taptr (as `taptr track --option`)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    clips = sorted(Path(args.videos).glob("*.mp4"))
    if not clips:
        print(f"no .mp4 clips in {args.videos}", file=sys.stderr)
        return 2
    print("| clip | tracker | return error, all (px) | movement, all (px) | return error, kept "
          "(px) | path, kept (px) | kept |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for clip in clips:
        frames = load_frames(clip)
        for name in args.trackers.split(","):
            r = round_trip(make_tracker(name, args.weights, args.option), frames)
            print(f"| {clip.name} | {name} | {r['error']:.1f} | {r['movement']:.1f} | "
                  f"{r['kept_error']:.1f} | {r['kept_path']:.1f} | {r['kept']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
