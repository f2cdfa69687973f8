"""`taptr track`: track points through a video and write the tracks and an overlay video.

    taptr track clip.mp4 --grid 10
    taptr track clip.mp4 --points "0,120,80;25,300,200" --out results/
    taptr track frames_dir/ --queries queries.csv --weights taptrv2.pth --device cuda
    taptr track clip.mp4 --backend onnxruntime     # ONNX Runtime (pip install 'taptr[onnx]')

Queries are (t, x, y): frame index, then pixel x, y of the original video (centre of the
top-left pixel = (0, 0)). Without --points/--queries a 10x10 grid on frame 0 is tracked.
Writes tracks.npz, tracks.csv (point,frame,x,y,visible,visibility) and overlay.mp4 in
--out (default ./taptr_out/<video name>); files appear only when everything succeeded.

Many videos in one run (one model load; docs/tracking.md, "A whole dataset"):

    taptr track clips/ --grid 10 --out results/         # a folder, searched recursively
    taptr track a.mp4 b.mp4 "data/**/*.webm" list.txt --out results/
    torchrun --nproc_per_node 2 -m taptr track clips/ --out results/   # split over processes

Each video's result goes to --out/<its path relative to the input root> (default
./taptr_out/...), with complete.json written last; a rerun skips complete results, so the same
command finishes a run that was stopped. --out/summary.csv and summary.json list every input
(status tracked, skipped or failed, with the reason); a failed input does not stop the run,
and the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from taptr.cli.threads import add_threads_option, apply_threads
from taptr.errors import TaptrError


def register(subparsers) -> None:
    from taptr.backends import BACKENDS

    parser = subparsers.add_parser(
        "track", help="track points through a video (writes tracks and an overlay video)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", metavar="VIDEO", nargs="+",
                        help="video file (mp4, mov, avi, webm, mkv, gif) or folder of images; "
                             "or many: several paths, a folder of videos (searched "
                             "recursively), a quoted glob, a .txt file of paths")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--points", metavar='"t,x,y;..."',
                       help='query points, e.g. "0,120,80;25,300,200"')
    which.add_argument("--queries", metavar="FILE",
                       help="query file: CSV/TXT rows t,x,y, or .npy/.npz [N, 3]")
    parser.add_argument("--grid", type=int, metavar="G",
                        help="a GxG grid of points (added after --points/--queries)")
    parser.add_argument("--grid-frame", type=int, default=None, metavar="T",
                        help="frame of the grid points (default 0)")
    parser.add_argument("--mask", metavar="IMG", help="keep only grid points inside this mask")
    parser.add_argument("--weights", default=None, metavar="NAME|PATH",
                        help="bundled weights name, our .safetensors, official .pth, or a "
                             "folder from `taptr export` (default: the bundled default weights)")
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help="pytorch (default) or onnxruntime (CPU, fp32; needs the extra "
                             "taptr[onnx]; default for a folder from `taptr export`)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: ./taptr_out/<video name>; many videos: "
                             "./taptr_out/, one folder per video and summary.csv)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    parser.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"),
                        help="precision (bf16/fp16 run under autocast; default fp32)")
    parser.add_argument("--no-backward", action="store_true",
                        help="do not track frames before each query frame")
    from taptr.viz import OverlayStyle

    style = OverlayStyle()
    parser.add_argument("--trail", type=int, default=style.trail, metavar="N",
                        help="trail length in frames in the overlay (0 none, -1 all; "
                             f"default {style.trail})")
    parser.add_argument("--hide-occluded", action="store_true",
                        help="hide occluded points in the overlay (default: hollow rings)")
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    parser.add_argument("--json", action="store_true", help="also write tracks.json")
    parser.add_argument("--point-chunk", type=int, default=None, metavar="N",
                        help="points per chunk inside the model (memory; results unchanged)")
    parser.add_argument("--pad-queries", type=int, default=0, metavar="N",
                        help="official-style padding to N queries (official TAPTR: 800)")
    add_threads_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from taptr.cli import tracking_options

    tracking_options.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from taptr.io.inputs import is_single_video

    apply_threads(args)
    check_arguments(args)
    if len(args.video) == 1 and is_single_video(args.video[0]):
        return run_one(args, args.video[0])
    from taptr.cli.track_many import run_many

    return run_many(args)


def check_arguments(args) -> None:
    """Refuse option mistakes that no video is needed to see (`TaptrError`)."""
    if args.grid is None and (args.grid_frame is not None or args.mask is not None):
        raise TaptrError("--grid-frame and --mask go with --grid G")
    for name in ("trail", "point_chunk", "pad_queries"):
        value = getattr(args, name)
        if value is not None and value < (-1 if name == "trail" else 0):
            raise TaptrError(f"--{name.replace('_', '-')} must not be negative, got {value}")


def run_one(args, video_path: str) -> int:
    """One video, written straight into --out (default ./taptr_out/<video name>)."""
    from taptr.cli.tracking_options import option_changes
    from taptr.cli.query_options import explicit_queries
    from taptr.io import open_video
    from taptr.io.atomic import check_can_create_folder, staged_folder
    from taptr.queries import build_queries
    from taptr.text import count
    from taptr.tracker import Tracker

    options = option_changes(args)
    video = open_video(video_path)
    queries = explicit_queries(args)
    grid_frame = args.grid_frame or 0
    # Validate everything cheap before loading the model.
    queries = build_queries(video, queries, args.grid, grid_frame, args.mask)
    out_dir = Path(args.out) if args.out else Path("taptr_out") / _stem(video_path)
    check_can_create_folder(out_dir)

    tracker = Tracker.from_pretrained(args.weights, device=args.device, dtype=args.dtype,
                                      backend=args.backend, options=options,
                                      tune_allocator=True)
    started = time.perf_counter()
    result = tracker.track(video, queries=queries, backward=not args.no_backward,
                           point_chunk=args.point_chunk or None,
                           pad_queries=args.pad_queries, progress=not args.no_progress)
    seconds = time.perf_counter() - started

    written = ["tracks.npz", "tracks.csv"] + (["tracks.json"] if args.json else [])
    with staged_folder(out_dir) as staging:
        for name in written:
            result.save(staging / name)
        if not args.no_overlay:
            result.save_overlay(staging / "overlay.mp4", video, trail=args.trail,
                                occluded="hidden" if args.hide_occluded else "hollow")
            written.append("overlay.mp4")
    width, height = result.video_size
    print(f"tracked {count(result.num_points, 'point')} through "
          f"{count(result.num_frames, 'frame')} "
          f"({width}x{height}) in {seconds:.1f} s: {result.num_frames / seconds:.1f} frames/s "
          f"on {tracker.device} ({tracker.backend})")
    print(f"wrote {', '.join(str(out_dir / name) for name in written)}")
    return 0


def _stem(video: str) -> str:
    path = Path(video)
    return path.stem if path.suffix else (path.name or "video")
