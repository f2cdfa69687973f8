"""`taptr eval`: score a tracker on a TAP-Vid dataset with tapnet's exact metrics.

    taptr eval --data tapvid_davis.pkl --mode first --tracker taptr --json davis_first.json

Prints per-video progress, then the protocol and a table of AJ, delta_avg, OA and
pts_within_{1,2,4,8,16} (percent) with the tracker's seconds. `--json` holds every number and
the protocol; `--per-video` one CSV row per video. Under `torchrun` the videos are split over
processes and rank 0 prints and writes.
"""

from __future__ import annotations

import argparse

from taptr.cli.threads import add_threads_option, apply_threads
from taptr.errors import TaptrError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a tracker on TAP-Vid (DAVIS, Kinetics, RGB-Stacking, RoboTAP)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", required=True, help="TAP-Vid pickle, or a directory of pickles (Kinetics, RoboTAP)"
    )
    from taptr.evaluation.evaluate import EvalProtocol
    from taptr.evaluation.metrics import QUERY_MODES

    defaults = EvalProtocol()
    parser.add_argument("--mode", choices=QUERY_MODES, default=defaults.query_mode,
                        help=f"query sampling (default: {defaults.query_mode})")
    parser.add_argument("--tracker", default="taptr",
                        help="taptr (default), or a classical baseline: static, lk, dis")
    parser.add_argument("--weights", default=None,
                        help="weights name or path for --tracker taptr (default: bundled)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N videos")
    parser.add_argument("--json", default=None, metavar="OUT", help="write all results as JSON")
    parser.add_argument("--per-video", default=None, metavar="CSV",
                        help="write one CSV row per video")
    parser.add_argument("--resolution", choices=("256", "native"), default=defaults.resolution,
                        help="frames given to the tracker: 256x256 (the official protocol) or "
                             f"native (default: {defaults.resolution})")
    parser.add_argument("--scale-255", action="store_true",
                        help="CoTracker/official-TAPTR coordinates (x255) instead of tapnet's x256")
    parser.add_argument("--pad-queries", type=int, default=None, metavar="N",
                        help="pad queries to N (official TAPTR uses 800; model trackers only)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    add_threads_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from taptr.cli import tracking_options

    tracking_options.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from taptr.data.tapvid import TapVidSource
    from taptr.distributed import DistributedContext
    from taptr.evaluation.evaluate import EvalProtocol, evaluate
    from taptr.evaluation.report import (
        check_writable,
        format_table,
        write_json,
        write_per_video_csv,
    )
    from taptr.cli.tracking_options import option_changes
    from taptr.evaluation.trackers import TRACKER_NAMES, load_tracker

    apply_threads(args)
    options = option_changes(args)
    if args.tracker not in TRACKER_NAMES:
        raise TaptrError(
            f"unknown tracker {args.tracker!r} (expected one of {', '.join(TRACKER_NAMES)})"
        )
    if args.limit is not None and args.limit < 1:
        raise TaptrError(f"--limit must be at least 1, got {args.limit}")
    if args.pad_queries is not None and args.pad_queries < 1:
        raise TaptrError(f"--pad-queries must be at least 1, got {args.pad_queries}")
    check_writable(args.json)
    check_writable(args.per_video)
    protocol = EvalProtocol(
        query_mode=args.mode,
        resolution=args.resolution,
        scale_255=args.scale_255,
        pad_queries=args.pad_queries,
    )
    source = TapVidSource(args.data)  # fails fast on a bad --data, before loading a model
    distributed = DistributedContext.join(args.device, backend="gloo")
    try:
        tracker = load_tracker(args.tracker, args.weights, distributed.device, options,
                               tune_allocator=True)
        results = evaluate(
            tracker,
            source,
            protocol,
            tracker_name=args.tracker,
            weights=args.weights,
            limit=args.limit,
            progress=not args.no_progress,
            distributed=distributed,
        )
    finally:
        distributed.close()
    if distributed.rank != 0:
        return 0
    if results["num_videos"] == 0:
        raise TaptrError(f"{args.data}: no video with a query point to evaluate")
    print(format_table(results))
    if args.json:
        write_json(args.json, results)
    if args.per_video:
        write_per_video_csv(args.per_video, results["per_video"])
    return 0
