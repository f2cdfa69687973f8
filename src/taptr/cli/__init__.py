"""The `taptr` command: a thin layer over the Python API.

Each subcommand lives in its own module `taptr.cli.<name>` with two functions:
`register(subparsers)` adds its parser (and sets `func`), `run(args) -> int` does the work.
User mistakes raise `TaptrError`; they are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from taptr.errors import TaptrError

SUBCOMMANDS = ("track", "eval", "train", "demo", "app", "convert", "export", "textures")


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


def attach_negative_values(argv: list[str], value_options: set[str]) -> list[str]:
    """'--points -1,5,5' -> '--points=-1,5,5' for options that take a value: argparse would
    read a value that starts with a minus sign as an option and fail with its own message
    before ours could name the problem. Nothing after '--' is touched."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            return joined + argv[index:]
        following = argv[index + 1] if index + 1 < len(argv) else None
        if (token in value_options and following is not None
                and re.match(r"-[\d.]", following)):
            joined.append(f"{token}={following}")
            index += 2
            continue
        joined.append(token)
        index += 1
    return joined


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Long option strings (of the parser and its sub-commands) that take a value."""
    options: set[str] = set()
    for action in parser._actions:  # noqa: SLF001 - argparse exposes no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                options |= _value_options(sub)
        elif action.nargs != 0:
            options |= {o for o in action.option_strings if o.startswith("--")}
    return options


class _TqdmHandler(logging.Handler):
    """Shows the library's log messages (`taptr.*` loggers) as plain lines that do not break
    progress bars: INFO on stdout, warnings on stderr as 'taptr COMMAND: warning: ...'."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        message = self.format(record)
        if record.levelno >= logging.WARNING:
            tqdm.write(f"{self.prefix}: warning: {message}", file=sys.stderr)
        else:
            tqdm.write(message, file=sys.stdout)


def show_library_messages(prefix: str = "taptr") -> None:
    """Route `taptr.*` log records of level INFO and above to the terminal (one handler)."""
    package_logger = logging.getLogger("taptr")
    for handler in [h for h in package_logger.handlers if isinstance(h, _TqdmHandler)]:
        package_logger.removeHandler(handler)
    handler = _TqdmHandler(prefix)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(attach_negative_values(argv, _value_options(parser)))
    show_library_messages(f"taptr {args.command}")
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
