"""How far the online stream is from the offline result, frame by frame from the end.

    python benchmarks/stream_vs_offline.py ../shared/videos/bear.mp4 --preset small --grid 8

Tracks a grid on frame 0 offline (`Tracker.track(..., backward=False)`) and online
(`Tracker.stream()` fed one frame at a time, length unknown), then prints, for each of the
last frames, the largest and mean distance (pixels of the video) between the two and how many
visibility flags differ. Frames earlier than the last `window_size` are expected to be equal
(up to float rounding). `--weights` uses real weights; without it the preset has random
weights (seeded), which shows where the results differ, not by how much a trained model would.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    args = parser.parse_args(argv)

    from taptr.io import open_video
    from taptr.models import build_model
    from taptr.tracker import Tracker

    torch.manual_seed(0)
    tracker = (Tracker.from_pretrained(args.weights) if args.weights
               else Tracker(build_model(args.preset)))
    video = open_video(args.video)
    frames = video.read_frames(0, args.frames or video.num_frames)
    offline = tracker.track(frames, grid=args.grid, backward=False, progress=False)
    online = tracker.stream(offline.queries)
    tracks = np.zeros_like(offline.tracks)
    visible = np.zeros_like(offline.visible)
    for update in [online.push(frame) for frame in frames] + [online.finish()]:
        if update is not None:
            tracks[:, update.frames] = update.tracks
            visible[:, update.frames] = update.visible
    distance = np.linalg.norm(tracks - offline.tracks, axis=-1)  # [N, T]
    flips = (visible != offline.visible).sum(0)
    window = tracker.config.window_size
    num_frames = len(frames)
    print(f"{args.video}: {num_frames} frames, {offline.num_points} points, preset "
          f"{tracker.config.name}, window {window}/{tracker.config.window_stride}")
    earlier = distance[:, :num_frames - window]
    print(f"frames 0..{num_frames - window - 1}: max difference {earlier.max():.2e} px, "
          f"visibility flips {int(flips[:num_frames - window].sum())}")
    print("| frames before the end | frame | max px | mean px | visibility flips |")
    print("|---:|---:|---:|---:|---:|")
    for frame in range(num_frames - window - 1, num_frames):
        print(f"| {num_frames - 1 - frame} | {frame} | {distance[:, frame].max():.2f} | "
              f"{distance[:, frame].mean():.2f} | {int(flips[frame])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
