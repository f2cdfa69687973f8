"""Videos per hour of `taptr track` over a folder of clips, with 1 and with N processes.

    python benchmarks/track_many_speed.py                       # 12 clips, 1 and 2 processes
    python benchmarks/track_many_speed.py --videos 40 --frames 24 --processes 1 2 4 --json r.json

Writes `--videos` synthetic clips (`--frames` frames of 256x256, H.264, in nested folders)
into a temporary folder, then for each process count runs the real command, from a fresh
start each time (empty --out):

    python -m taptr track CLIPS --grid G --no-overlay --out OUT                (1 process)
    torchrun --nproc_per_node N -m taptr track CLIPS --grid G --no-overlay ... (N processes)

and reports videos per hour twice: over the command's whole wall time (process start, imports,
model load, tracking, writing) and over the tracking loop alone (the "in X s" the command
prints: one model load per process is outside it). Each process uses `--threads` threads
(default 1), so N processes use N cores; on a machine shared with other jobs the figures move
with the load (say so when you quote them). The weights are the bundled default (`--weights`
to change); the speed does not depend on what the weights are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_clips(folder: Path, videos: int, frames: int, size: int = 256) -> None:
    """`videos` textured clips with a moving square, spread over nested folders."""
    import numpy as np

    from taptr.io import write_video

    for index in range(videos):
        rng = np.random.default_rng(index)
        blocks = rng.integers(0, 160, (size // 8, size // 8, 3), dtype=np.uint8)
        background = np.repeat(np.repeat(blocks, 8, 0), 8, 1)
        clip = np.repeat(background[None], frames, 0)
        for t in range(frames):
            top, left = 20 + 3 * t % (size - 60), 20 + 5 * t % (size - 60)
            clip[t, top:top + 32, left:left + 32] = (250, 210, 40)
        path = folder / f"group{index % 3}" / f"part{index % 2}" / f"clip{index:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, clip, fps=24)


def run(clips: Path, out: Path, processes: int, args) -> dict:
    """Run the command once; returns its wall time and the tracking time it printed."""
    common = ["track", str(clips), "--grid", str(args.grid), "--no-overlay", "--no-progress",
              "--threads", str(args.threads), "--out", str(out)]
    if args.weights:
        common += ["--weights", args.weights]
    if processes == 1:
        command = [sys.executable, "-m", "taptr", *common]
    else:
        torchrun = Path(sys.executable).parent / "torchrun"
        command = [str(torchrun), "--standalone", "--nproc_per_node", str(processes),
                   "-m", "taptr", *common]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS=str(args.threads))
    started = time.perf_counter()
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[:3000]}")
    match = re.search(r"tracked (\d+) videos? \((\d+) frames?\) in ([\d.]+) s", done.stdout)
    if not match or int(match.group(1)) != args.videos:
        sys.exit(f"unexpected output:\n{done.stdout}")
    loop = float(match.group(3))
    return {"processes": processes, "videos": args.videos, "frames_per_video": args.frames,
            "wall_s": round(wall, 2), "loop_s": round(loop, 2),
            "videos_per_hour_wall": round(args.videos / wall * 3600),
            "videos_per_hour_loop": round(args.videos / loop * 3600)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--grid", type=int, default=4, help="a GxG grid of points per clip")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        clips = Path(temp) / "clips"
        write_clips(clips, args.videos, args.frames)
        for processes in args.processes:
            rows.append(run(clips, Path(temp) / f"out{processes}", processes, args))
    print(f"{args.videos} clips of {args.frames} frames (256x256), {args.grid}x{args.grid} "
          f"points, {args.threads} thread(s) per process, on {os.cpu_count()} CPU cores")
    print("| processes | wall s | videos/hour (wall) | tracking loop s | videos/hour (loop) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['processes']} | {row['wall_s']} | {row['videos_per_hour_wall']} | "
              f"{row['loop_s']} | {row['videos_per_hour_loop']} |")
    if args.json:
        from taptr.io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
