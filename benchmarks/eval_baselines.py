"""Score the classical baselines on a generated TAP-Vid file and print a markdown table.

    .venv/bin/python benchmarks/eval_baselines.py --out /tmp/toy_tapvid.pkl

Writes the toy dataset (`taptr.evaluation.toydata`: smooth random textures under slow affine
motion with a sliding occluder, exact ground truth) in the TAP-Vid-DAVIS pickle format, then
runs `static`, `lk` and `dis` through the same loop as `taptr eval` in both query modes. The
numbers check the harness and give the floor; they say nothing about real videos.
"""

from __future__ import annotations

import argparse

from taptr.data.tapvid import write_tapvid_pickle
from taptr.evaluation.baselines import make_baseline
from taptr.evaluation.evaluate import EvalProtocol, evaluate
from taptr.evaluation.toydata import make_toy_videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/toy_tapvid.pkl", help="where to write the data")
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--points", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    videos = make_toy_videos(
        num_videos=args.videos, num_frames=args.frames, size=(args.width, args.height),
        num_points=args.points, seed=args.seed, max_speed=3.0,
    )
    write_tapvid_pickle(args.out, videos)
    print(f"data: {args.out}: {args.videos} toy videos, {args.frames} frames, "
          f"{args.width}x{args.height}, {args.points} tracks each, seed {args.seed}\n")
    print("| tracker | mode | AJ | delta_avg | OA | pts<1 | pts<2 | pts<4 | pts<8 | pts<16 "
          "| tracker s/video |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode in ("first", "strided"):
        for name in ("static", "lk", "dis"):
            results = evaluate(make_baseline(name), args.out, EvalProtocol(mode), progress=False)
            m = results["metrics"]
            cells = [m["average_jaccard"], m["average_pts_within_thresh"], m["occlusion_accuracy"],
                     *(m[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16))]
            seconds = results["seconds"] / results["num_videos"]
            print(f"| {name} | {mode} | " + " | ".join(f"{100 * c:.1f}" for c in cells)
                  + f" | {seconds:.3f} |")


if __name__ == "__main__":
    main()
