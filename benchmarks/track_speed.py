"""Tracking speed and peak memory of `taptr.Tracker` for video lengths and point counts.

    python benchmarks/track_speed.py --quick              # small preset, a few minutes on CPU
    python benchmarks/track_speed.py                      # the full table (long on CPU)
    python benchmarks/track_speed.py --presets taptrv2 --frames 50 --points 16 --device cuda

Each configuration runs in a fresh Python process, so its peak resident memory
(`resource.getrusage(...).ru_maxrss`, which sees PyTorch's allocations, unlike tracemalloc) and
its peak CUDA memory belong to that configuration alone. The video is a synthetic 640x480 clip:
an H.264 file decoded lazily (the path users take) when PyAV is installed, otherwise frames
generated on the fly. Random weights: speed and memory do not depend on the weights.
Queries sit on frame 0 (forward pass only) or, with `--query-frame middle`, on the middle frame
(forward pass plus the backward pass over the first half, read backwards from the file).
Prints a Markdown table; `--json FILE` keeps the raw numbers.

    python benchmarks/track_speed.py --reference f75c4b0 --threads 1

runs, in one run with the same threads, the same weights on the same video under an old
commit's code and under this tree's (the worker of this file, with the old tree's `src` first
on the import path): `small` without our correlation update (the model both can build) at 256
and 1024 points, `taptrv2` at 64 points, and the default `small` of each tree (its own tracking defaults); it
reports frames/s, the speed-up and the largest track difference in pixels. With onnxruntime
installed (`taptr[onnx]`) every model also runs on this tree's onnxruntime backend (exported
once per model into a temporary cache, outside the timing); those rows compare its speed with
the reference (or with this tree's pytorch backend when the reference cannot build the model)
and its tracks with this tree's pytorch backend.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTH, HEIGHT = 640, 480
DISTINCT_FRAMES = 32


# ----------------------------------------------------------------------------- the worker

@functools.lru_cache(maxsize=DISTINCT_FRAMES)
def _synthetic_frame(index: int):
    """A deterministic textured frame [H, W, 3] uint8 that drifts right over time.

    The pattern repeats every DISTINCT_FRAMES frames, which are cached: generating frames
    costs (almost) nothing and the same memory for every video length.
    """
    import numpy as np

    index %= DISTINCT_FRAMES
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    shift = 2 * index
    red = ((columns - shift) // 16 + rows // 16) % 2 * 160 + 40
    green = (np.sin((columns - shift) / 23.0) * 60 + 120).astype(int)
    blue = (rows * 255 // HEIGHT)
    return np.stack([red, green + 0 * rows, blue + 0 * columns], -1).astype(np.uint8)


def _synthetic_source(num_frames: int):
    from taptr.io.video import VideoSource

    class SyntheticVideo(VideoSource):
        """Frames generated on demand (nothing held)."""

        def __init__(self):
            self.num_frames, self.fps, self.name = num_frames, 30.0, "synthetic"
            self.size = (WIDTH, HEIGHT)

        def iter_frames(self, start=0, stop=None):
            for index in range(start, self._check_stop(stop)):
                yield _synthetic_frame(index % DISTINCT_FRAMES)

        def iter_frames_reversed(self, stop=None, transform=None, buffer_bytes=0):
            transform = transform or (lambda frame: frame)
            for index in reversed(range(self._check_stop(stop))):
                yield transform(_synthetic_frame(index % DISTINCT_FRAMES))

    return SyntheticVideo()


def write_video_file(path: Path, num_frames: int) -> Path:
    from taptr.io import write_video

    write_video(path, (_synthetic_frame(i % DISTINCT_FRAMES) for i in range(num_frames)), fps=30)
    return path


def run_worker(args) -> None:
    """Track once and print one JSON line with the timing and memory of this process."""
    import numpy as np
    import torch

    from taptr.config import ModelConfig
    from taptr.models import build_model
    from taptr.tracker import Tracker

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:  # {"config": fields, "state": state dict}: the same model under any code
        saved = torch.load(args.model, weights_only=False)
        known = set(ModelConfig.__dataclass_fields__)
        config = ModelConfig(**{k: v for k, v in saved["config"].items() if k in known})
        try:  # trees with tracking options: this tree's defaults as saved, else the legacy fields
            from taptr.models.options import TrackingOptions

            options = (TrackingOptions.from_dict(saved["tracking_options"])
                       if "tracking_options" in saved
                       else TrackingOptions.from_legacy_config(saved["config"]))
            model = build_model(config, options)
        except ImportError:  # older trees read them from ModelConfig
            model = build_model(config)
        upgrade = getattr(model, "upgrade_key", lambda key: key)  # older parameter names
        model.load_state_dict({upgrade(key): value for key, value in saved["state"].items()})
    else:
        model = build_model(args.preset)
    options = {"backend": args.backend} if args.backend else {}  # older trees: no backends
    tracker = Tracker(model, device=args.device, dtype=args.dtype, **options)
    cuda = tracker.device.type == "cuda"
    video = args.video if args.video else _synthetic_source(args.frames)
    query_frame = 0 if args.query_frame == "first" else args.frames // 2
    side = int(np.ceil(np.sqrt(args.points)))
    xs = (np.arange(args.points) % side + 0.5) * WIDTH / side - 0.5
    ys = (np.arange(args.points) // side + 0.5) * HEIGHT / side - 0.5
    queries = np.stack([np.full(args.points, query_frame), xs, ys], 1)
    # Warm-up (kernel selection for every tensor shape, allocator) on a short clip with the
    # same shapes: same points, same length modulo 8 (so the same partial batches).
    warm_frames = min(args.frames, 16 + args.frames % 8)
    warm_queries = queries.copy()
    warm_queries[:, 0] = 0 if args.query_frame == "first" else warm_frames // 2
    tracker.track(_synthetic_source(warm_frames), queries=warm_queries, progress=False)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _peak_rss_mb()
    started = time.perf_counter()
    result = tracker.track(video, queries=queries, progress=False)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    assert result.tracks.shape == (args.points, args.frames, 2)
    if args.save_tracks:
        from taptr.io.atomic import atomic_path

        with atomic_path(args.save_tracks) as temporary:
            np.save(temporary, np.asarray(result.tracks))
    print(json.dumps({
        "preset": args.preset, "frames": args.frames, "points": args.points,
        "query_frame": args.query_frame, "device": str(tracker.device),
        "dtype": args.dtype or "fp32", "backend": args.backend or "pytorch", "source": "file" if args.video else "synthetic",
        "seconds": seconds, "fps": args.frames / seconds,
        "peak_rss_mb": _peak_rss_mb(), "rss_after_warmup_mb": rss_before,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
    }))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ----------------------------------------------------------------------------- the driver

def configurations(args) -> list[dict]:
    if args.quick:
        lengths, counts, presets = [50, 200], [16, 256], ["small"]
    else:
        lengths, counts, presets = args.frames, args.points, args.presets
    configs = []
    for preset in presets:
        for frames in lengths:
            configs.append(dict(preset=preset, frames=frames, points=counts[0]))
        for points in counts[1:]:
            configs.append(dict(preset=preset, frames=lengths[0], points=points))
    return configs


def run_configuration(config: dict, args, video_folder: Path | None,
                      source_tree: Path | None = None) -> dict:
    """One worker process; `source_tree`: run another checkout's code (its `src` first on the
    path); config may name a saved model ("model") and a file for the tracks ("save_tracks")."""
    command = [sys.executable, __file__, "--worker", "--preset", config["preset"],
               "--frames", str(config["frames"]), "--points", str(config["points"]),
               "--query-frame", args.query_frame]
    for key in ("model", "save_tracks", "backend"):
        if config.get(key):
            command += [f"--{key.replace('_', '-')}", str(config[key])]
    if args.device:
        command += ["--device", args.device]
    if args.dtype:
        command += ["--dtype", args.dtype]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if video_folder is not None:
        path = video_folder / f"synthetic_{config['frames']}.mp4"
        if not path.exists():
            write_video_file(path, config["frames"])
        command += ["--video", str(path)]
    environment = dict(os.environ)
    tree = source_tree if source_tree is not None else Path(__file__).resolve().parents[1]
    source_folder = str(tree / "src")
    environment["PYTHONPATH"] = source_folder + os.pathsep + environment.get("PYTHONPATH", "")
    completed = subprocess.run(command, capture_output=True, text=True, env=environment,
                               timeout=args.timeout)
    if completed.returncode != 0:
        return {**config, "error": completed.stderr.strip().splitlines()[-1:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def side_by_side(args) -> str:
    """The `--reference` table (module docstring)."""
    import dataclasses

    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reference_code import checkout

    from taptr import get_preset
    from taptr.io.atomic import atomic_path
    from taptr.models import build_model

    frames = args.frames[0]
    same_small = get_preset("small").replace(correlation_stages=(), initialisation="detr")
    # (name, config, points, both trees, this tree's own defaults). The same-work rows turn off
    # the additions older trees lack (the flow prior); the last row runs each tree with its own
    # defaults of the day (e.g. v3.2's, without the flow prior): the default against the default.
    cases = [("small (no correlation)", same_small, 256, True, False),
             ("small (no correlation)", same_small, 1024, True, False),
             ("taptrv2", get_preset("taptrv2"), 64, True, False),
             ("small (each tree's default)", get_preset("small"), 256, True, True)]
    if args.cases:
        cases = [case for case in cases if any(word in case[0] for word in args.cases)]
    lines = [f"tracking speed, {WIDTH}x{HEIGHT} H.264 video of {frames} frames, queries on frame "
             f"0, {args.threads or torch.get_num_threads()} thread(s), same random weights on "
             "both sides",
             "| model | points | reference frames/s | this tree frames/s | speed-up | "
             "largest track difference (px) | peak RSS ref / this (MB) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    try:
        import onnxruntime  # noqa: F401

        onnx_available = True
    except ImportError:
        onnx_available = False
    with tempfile.TemporaryDirectory(prefix="taptr-bench-") as folder, \
            checkout(args.reference) as old_tree:
        folder = Path(folder)
        os.environ["TAPTR_CACHE"] = str(folder / "cache")  # ONNX exports of these models
        for index, (name, config, points, both, own_defaults) in enumerate(cases):
            torch.manual_seed(0)
            model_file = folder / f"model{index}.pt"
            model = build_model(config)
            # The default tracking options in the fields older trees kept in ModelConfig, so
            # both sides track with the same ones (e.g. the motion correction).
            options = model.default_options
            if not own_defaults:
                options = options.replace(flow_prior=False)
            legacy = {"correlation_template_update": options.template_update,
                      "motion_correction_px": options.motion_correction_px,
                      "motion_correction_neighbours": options.motion_correction_neighbours}
            # Parameter names as older trees had them (each hook's legacy prefixes; this tree
            # reads them too).
            state = model.state_dict()
            for hook_name, hook in model.hooks.items():
                for old_prefix, new_prefix in hook.legacy_prefixes.items():
                    current = f"hooks.{hook_name}.{new_prefix}"
                    state = {(old_prefix + key[len(current):] if key.startswith(current)
                              else key): value for key, value in state.items()}
            with atomic_path(model_file) as temporary:
                torch.save({"config": {**dataclasses.asdict(config), **legacy},
                            "tracking_options": options.to_dict(), "state": state}, temporary)
            run = dict(preset=config.name, frames=frames, points=points, model=model_file)
            # Alternate the two sides `--repeats` times and keep each side's median run: on a
            # shared machine single runs vary by 10% and more.
            new_runs, old_runs = [], []
            for _ in range(args.repeats):
                new_runs.append(run_configuration(
                    {**run, "save_tracks": folder / f"new{index}.npy"}, args, folder))
                if both:
                    old_runs.append(run_configuration(
                        {**run, "save_tracks": folder / f"old{index}.npy"}, args, folder,
                        old_tree))
            new = _median_run(new_runs)
            old = _median_run(old_runs) if both else None
            if "error" in new or (old is not None and "error" in old):
                lines.append(f"| {name} | {points} | failed: {(old or {}).get('error')} "
                             f"{new.get('error')} | | | | |")
                continue
            if onnx_available:
                onnx = run_configuration({**run, "backend": "onnxruntime",
                                          "save_tracks": folder / f"onnx{index}.npy"}, args,
                                         folder)
                if "error" in onnx:
                    lines.append(f"| {name}, onnxruntime | {points} | failed: {onnx['error']} "
                                 "| | | | |")
                else:
                    onnx_difference = float(np.abs(np.load(folder / f"onnx{index}.npy")
                                                   - np.load(folder / f"new{index}.npy")).max())
                    baseline = old if old is not None else new
                    lines.append(
                        f"| {name}, onnxruntime | {points} | "
                        f"{old['fps'] if old is not None else float('nan'):.2f} | "
                        f"{onnx['fps']:.2f} | {onnx['fps'] / baseline['fps']:.2f}"
                        f"{'' if old is not None else ' (of pytorch)'} | {onnx_difference:.2e} "
                        f"(vs pytorch) | - / {onnx['peak_rss_mb']:.0f} |")
                    print(lines[-1], file=sys.stderr, flush=True)
            if old is None:
                lines.append(f"| {name} | {points} | - | {new['fps']:.2f} | - | - | - / "
                             f"{new['peak_rss_mb']:.0f} |")
                continue
            difference = float(np.abs(np.load(folder / f"new{index}.npy")
                                      - np.load(folder / f"old{index}.npy")).max())
            lines.append(f"| {name} | {points} | {old['fps']:.2f} | {new['fps']:.2f} | "
                         f"{new['fps'] / old['fps']:.2f} | {difference:.2e} | "
                         f"{old['peak_rss_mb']:.0f} / {new['peak_rss_mb']:.0f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def _median_run(runs: list[dict]) -> dict:
    """The run with the median frames/s (the first failed run, if any failed)."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    return sorted(runs, key=lambda run: run["fps"])[(len(runs) - 1) // 2]


def format_table(rows: list[dict]) -> str:
    lines = ["| preset | frames | points | queries on | device | threads | frames/s | s/frame | "
             "peak RSS (MB) | peak CUDA (MB) |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['preset']} | {row['frames']} | {row['points']} | | | | "
                         f"failed: {row['error']} | | | |")
            continue
        cuda = f"{row['peak_cuda_mb']:.0f}" if row["peak_cuda_mb"] is not None else "-"
        lines.append(f"| {row['preset']} | {row['frames']} | {row['points']} | "
                     f"{row['query_frame']} frame | {row['device']} {row['dtype']} | "
                     f"{row['threads']} | "
                     f"{row['fps']:.2f} | {1 / row['fps']:.3f} | {row['peak_rss_mb']:.0f} | "
                     f"{cuda} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small preset, 50/200 frames, 16/256 points")
    parser.add_argument("--presets", nargs="+", default=["small", "taptrv2"])
    parser.add_argument("--frames", nargs="+", type=int, default=[50, 200, 800],
                        help="video lengths (the points sweep uses the first)")
    parser.add_argument("--points", nargs="+", type=int, default=[16, 256, 1024, 4096],
                        help="point counts (the length sweep uses the first)")
    parser.add_argument("--query-frame", choices=("first", "middle"), default="first")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: PyTorch's choice)")
    parser.add_argument("--synthetic", action="store_true",
                        help="frames generated on the fly instead of decoding an H.264 file")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per configuration")
    parser.add_argument("--json", default=None, help="also write the raw rows here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="small", help=argparse.SUPPRESS)
    parser.add_argument("--video", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--save-tracks", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --reference: runs of each side, alternating; each side's "
                             "median run is reported")
    parser.add_argument("--cases", nargs="+", default=None, metavar="WORD",
                        help="with --reference: only the models whose name contains a WORD")
    parser.add_argument("--backend", default=None, choices=("pytorch", "onnxruntime"),
                        help="tracker backend of this tree (default pytorch); the --reference "
                             "table adds onnxruntime rows when onnxruntime is installed")
    parser.add_argument("--reference", metavar="COMMIT",
                        help="side by side with this commit's code (see above)")
    args = parser.parse_args(argv)
    if args.worker:
        args.frames, args.points = args.frames[0], args.points[0]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    if args.reference:
        if args.repeats < 1:
            raise SystemExit("--repeats must be at least 1")
        print(side_by_side(args))
        return 0
    try:
        import av  # noqa: F401

        use_file = not args.synthetic
    except ImportError:
        use_file = False
    rows = []
    with tempfile.TemporaryDirectory(prefix="taptr-bench-") as folder:
        for config in configurations(args):
            row = run_configuration(config, args, Path(folder) if use_file else None)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(format_table(rows))
    if args.json:
        from taptr.io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
