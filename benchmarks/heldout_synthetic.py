"""Held-out synthetic benchmark: our model against the static, lk and dis baselines.

Generates (once) clips from the scene engine with the *held-out* texture split (photos never
used in training): 48 frames at 384x512 with occlusions, elastic motion, blur and
compression, then runs `taptr eval` in both query modes for each tracker and prints a table.

    python benchmarks/heldout_synthetic.py --textures textures --clips 16 [--weights PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from taptr.data.scenes import write_heldout_set
from taptr.data.scenes.config import SceneConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--textures", default=None, help="photo folder (held-out split used)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="384x512", help="H x W")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--data", default="benchmarks/data/heldout_synthetic.pkl")
    parser.add_argument("--weights", default=None, help="taptr weights (default: bundled)")
    parser.add_argument("--trackers", default="static,lk,dis,taptr")
    parser.add_argument("--modes", default="first,strided")
    parser.add_argument("--out", default="benchmarks/results/heldout_synthetic.json")
    args = parser.parse_args()

    data = Path(args.data)
    if not data.exists():
        height, width = (int(v) for v in args.size.lower().split("x"))
        config = SceneConfig(size=(height, width), num_frames=args.frames, num_points=256,
                             difficulty=0.6, effects=True, textures=args.textures,
                             texture_split="heldout")
        write_heldout_set(data, args.clips, config, args.seed)
        print(f"wrote {args.clips} held-out clips to {data}")
    results = {}
    for mode in args.modes.split(","):
        for tracker in args.trackers.split(","):
            out = Path(args.out).with_name(f"{Path(args.out).stem}_{tracker}_{mode}.json")
            command = [sys.executable, "-m", "taptr", "eval", "--data", str(data), "--mode", mode,
                       "--tracker", tracker, "--json", str(out)]
            if tracker == "taptr" and args.weights:
                command += ["--weights", args.weights]
            subprocess.run(command, check=True)
            results[(tracker, mode)] = json.loads(out.read_text())
    print(f"\n{'tracker':8s} {'mode':8s} {'AJ':>6s} {'d_avg':>6s} {'OA':>6s}")
    for (tracker, mode), result in results.items():
        metrics = result.get("metrics", result)
        print(f"{tracker:8s} {mode:8s} {metrics['average_jaccard']:6.3f} "
              f"{metrics['average_pts_within_thresh']:6.3f} {metrics['occlusion_accuracy']:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
