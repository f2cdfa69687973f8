"""Training speed: optimizer steps per second of a preset, on this CPU and on CUDA if present.

    python benchmarks/train_speed.py                      # small preset, 24 frames, 256 points
    python benchmarks/train_speed.py --preset tiny --frames 8 --points 64 --steps 3
    python benchmarks/train_speed.py --reference f75c4b0   # side by side with an old commit

`--reference COMMIT` times, in one run and with the same threads, the training step (frozen
backbone) of the same weights on the same batch under the old commit's code and under this
tree's, compares the first step's gradients (largest relative difference over parameters), and
adds a row for this tree's default small preset (with our correlation update, which the old
code does not have).

One step = forward with all decoder layers, the losses (docs/architecture.md, section 6.1),
backward, gradient clipping, AdamW and the EMA update, on a fixed batch of synthetic clips (data
time excluded: the scene engine has its own benchmark). CUDA runs use bf16 autocast, as
`taptr train` does by default.
"""

from __future__ import annotations

import argparse
import time

import torch

from taptr import get_preset
from taptr.data.scenes import SceneGenerator
from taptr.data.scenes.config import SceneConfig
from taptr.models import build_model
from taptr.training.batch import make_batch
from taptr.training.ema import ModelEma
from taptr.training.losses import TrackingCriterion
from taptr.training.optim import build_optimizer
from taptr.device import resolve_precision
from taptr.io.atomic import atomic_path


def make_fixed_batch(preset: str, frames: int, points: int, batch: int, device: torch.device):
    config = get_preset(preset)
    scenes = SceneConfig(size=config.input_size, num_frames=frames, num_points=points)
    samples = SceneGenerator(scenes).generate_batch(list(range(batch)))
    return make_batch(samples, config.input_size, device=device)


def time_steps(preset: str, batch: dict, device: torch.device, steps: int, warmup: int,
               amp: str = "auto", frozen_backbone: bool = False) -> float:
    """Seconds per optimizer step (mean over `steps` after `warmup`)."""
    torch.manual_seed(0)
    model = build_model(get_preset(preset)).to(device).train()
    criterion = TrackingCriterion(model.config.input_size)
    if frozen_backbone:  # what `taptr train` does with optim.lr_backbone = 0
        model.backbone.requires_grad_(False)
    ema = ModelEma(model)
    optimizer = build_optimizer(model, 2e-4, 1e-5, 1e-4)
    dtype = resolve_precision(amp, device)

    def one_step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            output = model(batch["video"], batch["query_points"], batch["query_frames"],
                           return_layers=True)
        loss, _ = criterion(output, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)

    for _ in range(warmup):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def side_by_side(commit: str, frames: int, points: int, steps: int, warmup: int,
                 threads: int) -> None:
    """The `--reference` table (see the module docstring)."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from reference_code import REPOSITORY, checkout, run_python

    worker = Path(__file__).resolve().parent / "train_step_worker.py"
    reference_config = get_preset("small").replace(correlation_stages=(), initialisation="detr")
    cases = {"old preset": reference_config, "current small preset": get_preset("small")}
    batch = make_fixed_batch("small", frames, points, 1, torch.device("cpu"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="taptr-train-speed-") as folder:
        for name, config in cases.items():
            torch.manual_seed(0)
            model = build_model(config)
            with atomic_path(Path(folder) / f"{len(results)}.pt") as temporary:
                torch.save({"config": dataclasses.asdict(config), "state": model.state_dict(),
                            "batch": batch}, temporary)
            results[name] = Path(folder) / f"{len(results)}.pt"
        args = [str(steps), str(warmup)]
        timings = {}
        with checkout(commit) as old_tree:
            run_python(worker, old_tree, [str(results["old preset"]), f"{folder}/ref.pt", *args],
                       threads)
        run_python(worker, REPOSITORY, [str(results["old preset"]), f"{folder}/new.pt", *args],
                   threads)
        run_python(worker, REPOSITORY, [str(results["current small preset"]),
                                        f"{folder}/cur.pt", *args], threads)
        for label in ("ref", "new", "cur"):
            timings[label] = torch.load(f"{folder}/{label}.pt", weights_only=True)
    old, new = timings["ref"], timings["new"]
    worst = max(float((new["gradients"][k] - g).norm() / g.norm().clamp_min(1e-12))
                for k, g in old["gradients"].items())
    print(f"training step, small preset, 1 clip of {frames} frames x {points} points, "
          f"frozen backbone, {threads} thread(s), mean of {steps} steps after {warmup}")
    print(f"{'code':<34} {'s/step':>8} {'speed-up':>9}")
    print(f"{'commit ' + commit + ' (reference)':<34} {old['seconds_per_step']:>8.3f} {1.0:>9.2f}")
    print(f"{'this tree, same model':<34} {new['seconds_per_step']:>8.3f} "
          f"{old['seconds_per_step'] / new['seconds_per_step']:>9.2f}")
    current = timings["cur"]["seconds_per_step"]
    print(f"{'this tree, small + correlation':<34} {current:>8.3f} "
          f"{old['seconds_per_step'] / current:>9.2f}")
    print(f"largest relative gradient difference (same model): {worst:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--batch", default="1", help="clips per step, comma list (e.g. 1,4)")
    parser.add_argument("--backbone", default="trained",
                        help="trained, frozen (lr-backbone 0) or trained,frozen")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--devices", default="auto", help="comma list, e.g. cpu,cuda (auto: "
                                                           "cpu and cuda when available)")
    parser.add_argument("--amp", default="auto", help="auto (bf16 on CUDA), none, bf16")
    parser.add_argument("--reference", metavar="COMMIT",
                        help="side by side with this commit's code on CPU (e.g. f75c4b0)")
    args = parser.parse_args()
    if args.reference:
        side_by_side(args.reference, args.frames, args.points, args.steps, args.warmup,
                     torch.get_num_threads())
        return
    names = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
             if args.devices == "auto" else args.devices.split(","))
    input_size = get_preset(args.preset).input_size
    header = (f"{'device':<28} {'preset':<7} {'backbone':<8} {'batch':>5} {'frames':>6} "
              f"{'points':>6} {'input':>9} {'amp':>5} {'s/step':>8} {'steps/s':>8} "
              f"{'clips/s':>8}")
    rows = []
    for name in names:
        device = torch.device(name)
        label = (torch.cuda.get_device_name(device) if device.type == "cuda"
                 else f"cpu ({torch.get_num_threads()} threads)")
        amp = "bf16" if resolve_precision(args.amp, device) == torch.bfloat16 else "fp32"
        for batch_size in (int(b) for b in args.batch.split(",")):
            batch = make_fixed_batch(args.preset, args.frames, args.points, batch_size, device)
            for backbone in args.backbone.split(","):
                seconds = time_steps(args.preset, batch, device, args.steps, args.warmup,
                                     args.amp, frozen_backbone=backbone == "frozen")
                rows.append(f"{label[:28]:<28} {args.preset:<7} {backbone:<8} {batch_size:>5} "
                            f"{args.frames:>6} {args.points:>6} "
                            f"{input_size[0]:>4}x{input_size[1]:<4} {amp:>5} {seconds:>8.3f} "
                            f"{1 / seconds:>8.3f} {batch_size / seconds:>8.3f}")
                print(rows[-1], flush=True)
    print()
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
