"""`taptr track` over many videos (several paths, a folder of videos, a glob, a list file):
the command-line side of `taptr.track_many.track_dataset`.

Checks everything that needs no video first (options, query and mask files, --out, the
inputs), then joins the process group `torchrun` describes (gloo; one process without it),
loads the model once per process, tracks this process's share, and on rank 0 writes
--out/summary.csv and summary.json and prints the totals. Exit status: 0 when every input is
tracked or already complete, 1 when any failed (the last line says how many), 2 for a usage
mistake (nothing done).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

DEFAULT_OUT = "taptr_out"


def run_many(args) -> int:
    from taptr.cli.tracking_options import option_changes
    from taptr.distributed import DistributedContext
    from taptr.cli.query_options import explicit_queries
    from taptr.io.atomic import check_can_create_folder
    from taptr.io.inputs import find_videos
    from taptr.queries import read_mask_image
    from taptr.text import count
    from taptr.track_many import SaveOptions, file_digest, track_dataset, write_summary
    from taptr.tracker import Tracker

    options = option_changes(args)
    queries = explicit_queries(args)
    mask = read_mask_image(args.mask) if args.mask is not None else None
    out = Path(args.out or DEFAULT_OUT)
    check_can_create_folder(out)
    videos = find_videos(args.video, exclude=[out])

    track_kwargs = {"queries": queries, "grid": args.grid, "grid_frame": args.grid_frame or 0,
                    "mask": mask, "backward": not args.no_backward,
                    "point_chunk": args.point_chunk or None, "pad_queries": args.pad_queries}
    overlay = None if args.no_overlay else {
        "trail": args.trail, "occluded": "hidden" if args.hide_occluded else "hollow"}
    save = SaveOptions(("tracks.npz", "tracks.csv") + (("tracks.json",) if args.json else ()),
                       overlay)
    settings = {  # what a result depends on: a result made otherwise is recomputed
        "weights": _absolute_if_file(args.weights), "backend": args.backend, "dtype": args.dtype,
        "options": options, "points": args.points,
        "queries": file_digest(args.queries) if args.queries else None,
        "grid": args.grid, "grid_frame": args.grid_frame,
        "mask": file_digest(args.mask) if args.mask else None,
        "backward": not args.no_backward, "pad_queries": args.pad_queries,
        "files": save.names, "overlay": overlay,
    }

    context = DistributedContext.join(args.device, backend="gloo")
    try:
        tracker = Tracker.from_pretrained(args.weights, device=context.device,
                                          dtype=args.dtype, backend=args.backend,
                                          options=options, tune_allocator=True)
        started = time.perf_counter()
        records = track_dataset(tracker, videos, out, track_kwargs=track_kwargs, save=save,
                                settings=settings, context=context,
                                progress=not args.no_progress)
        seconds = time.perf_counter() - started
    finally:
        context.close()
    if not context.is_main:
        return 0

    done = [r for r in records if r["status"] == "tracked"]
    skipped = sum(r["status"] == "skipped" for r in records)
    failed = [r for r in records if r["status"] == "failed"]
    paths = write_summary(out, records, {"processes": context.world_size,
                                         "wall_seconds": round(seconds, 3),
                                         "device": str(tracker.device)})
    frames = sum(r["frames"] for r in done)
    rate = f": {len(done) / seconds * 3600:.0f} videos/hour" if done and seconds > 0 else ""
    processes = (f" in {count(context.world_size, 'process', 'processes')}"
                 if context.enabled else "")
    print(f"tracked {count(len(done), 'video')} ({count(frames, 'frame')}) in {seconds:.1f} s"
          f"{rate}{processes} on {tracker.device}"
          + (f"; skipped {skipped} already complete" if skipped else ""))
    print(f"wrote results under {out}, summary in {paths[0]} and {paths[1].name}")
    if failed:
        sys.stdout.flush()
        print(f"taptr track: {len(failed)} of {count(len(records), 'video')} failed "
              f"(see {paths[0]})", file=sys.stderr)
        return 1
    return 0


def _absolute_if_file(path):
    """A weights file as an absolute path (the same run from another folder is the same);
    a bundled name or None as it is."""
    return str(Path(path).resolve()) if path is not None and Path(path).exists() else path
