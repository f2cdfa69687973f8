"""`taptr convert`: official `taptrv2.pth` -> our safetensors (config in the metadata)."""

from __future__ import annotations

from pathlib import Path

from taptr.errors import TaptrError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert an official TAPTRv2 checkpoint to taptr safetensors",
        description="Read the official checkpoint safely (weights_only) and write our weights.")
    parser.add_argument("checkpoint", help="official checkpoint, e.g. taptrv2.pth")
    parser.add_argument("output", help="output .safetensors file")
    parser.add_argument("--entry", default="ema_model",
                        help="checkpoint entry holding the weights (default: ema_model)")
    parser.add_argument("--fp16", action="store_true", help="store the weights as float16")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from taptr.io.atomic import check_can_write_file
    from taptr.official import load_official
    from taptr.weights import save_weights

    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise TaptrError(f"output must end with .safetensors: {output}")
    check_can_write_file(output)  # before reading the checkpoint
    model = load_official(args.checkpoint, entry=args.entry)
    save_weights(model, output, dtype=torch.float16 if args.fp16 else None,
                 extra_metadata={"source": Path(args.checkpoint).name})
    count = sum(p.numel() for p in model.parameters())
    print(f"converted {args.checkpoint} ({count / 1e6:.1f} M parameters) -> {output}")
    return 0
