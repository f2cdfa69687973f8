"""The `taptr` command: a thin layer over the Python API.

Each subcommand lives in its own module `taptr.cli.<name>` with two functions:
`register(subparsers)` adds its parser (and sets `func`), `run(args) -> int` does the work.
User mistakes raise `TaptrError`; they are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from taptr.errors import TaptrError

SUBCOMMANDS = ("track", "eval", "train", "demo", "convert", "textures")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taptr", description="TAPTRv2 point tracking: track any point through a video."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"taptr.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TaptrError as error:
        print(f"taptr {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"taptr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
