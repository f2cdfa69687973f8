"""Clips per second of the synthetic scene engine.

    python benchmarks/scene_engine_speed.py                      # CPU, 1 and 2 threads
    python benchmarks/scene_engine_speed.py --textures textures/ # with photo textures
    python benchmarks/scene_engine_speed.py --device cuda --batch 1 16 64

Prints one table row per (size, threads, batch): clips/s of the whole engine (scene sampling,
rendering, ground truth, camera effects at the default probabilities) after one warm-up batch.
"""

from __future__ import annotations

import argparse
import time

import torch

from taptr.data.scenes import SceneConfig, SceneGenerator
from taptr.data.scenes.textures import TextureLibrary

SIZES = {"24x256x256": (24, (256, 256)), "48x384x512": (48, (384, 512))}


def clips_per_second(generator: SceneGenerator, batch: int, clips: int, first_seed: int) -> float:
    """Generate about `clips` clips in batches of `batch`; clips per second (after warm-up)."""
    generator.generate_batch(list(range(10_000, 10_000 + batch)))  # warm-up
    if generator.device.type == "cuda":
        torch.cuda.synchronize()
    rounds = max(1, clips // batch)
    start = time.perf_counter()
    for round_index in range(rounds):
        seeds = range(first_seed + round_index * batch, first_seed + (round_index + 1) * batch)
        samples = generator.generate_batch(list(seeds))
    if generator.device.type == "cuda":
        torch.cuda.synchronize()
    del samples
    return rounds * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--textures", default=None, help="texture folder (default: procedural)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--clips", type=int, default=4, help="clips timed per row")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument(
        "--compare-cpu",
        type=int,
        default=0,
        metavar="K",
        help="also render K clips on --device and on the CPU and report how far they differ",
    )
    args = parser.parse_args()

    library = (
        TextureLibrary.load(args.textures, split="train")
        if args.textures
        else TextureLibrary.empty()
    )
    texture_note = (
        f"{len(library.backgrounds)} photos + {len(library.cutouts)} cut-outs"
        if args.textures
        else "procedural"
    )
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"device: {device_name}; textures: {texture_note}; effects on; difficulty {args.difficulty}"
    )
    print(f"{'clip (T x H x W)':<18} {'threads':>7} {'batch':>5} {'clips/s':>9} {'s/clip':>8}")
    threads_to_try = args.threads if args.device == "cpu" else [torch.get_num_threads()]
    for size_name in args.sizes:
        frames, size = SIZES[size_name]
        config = SceneConfig(
            size=size, num_frames=frames, num_points=256, difficulty=args.difficulty
        )
        generator = SceneGenerator(config, library, args.device)
        for threads in threads_to_try:
            torch.set_num_threads(threads)
            for batch in args.batch:
                rate = clips_per_second(generator, batch, max(args.clips, batch), first_seed=0)
                print(f"{size_name:<18} {threads:>7} {batch:>5} {rate:>9.2f} {1 / rate:>8.3f}")
    if args.compare_cpu:
        compare_with_cpu(library, args.device, args.compare_cpu)


def compare_with_cpu(library: TextureLibrary, device: str, count: int) -> None:
    """Render `count` clips on `device` and on the CPU; print the largest differences."""
    config = SceneConfig(size=(256, 256), num_frames=24, num_points=256, effects=False)
    on_device = SceneGenerator(config, library, device).generate_batch(list(range(count)))
    on_cpu = SceneGenerator(config, library, "cpu").generate_batch(list(range(count)))
    for seed, (a, b) in enumerate(zip(on_device, on_cpu)):
        a = a.to("cpu")
        a.check()
        track_error = (a.tracks - b.tracks).abs().max().item()
        visibility_agreement = (a.visible == b.visible).float().mean().item()
        pixel_error = (a.video.int() - b.video.int()).abs().float()
        print(
            f"seed {seed}: tracks max diff {track_error:.2e} px, visibility agreement "
            f"{visibility_agreement:.4f}, pixels mean diff {pixel_error.mean():.3f}, "
            f"max {pixel_error.max():.0f}"
        )


if __name__ == "__main__":
    main()
