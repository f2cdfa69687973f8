"""The `--threads` option, shared by every command that computes (track, demo, eval, export,
app, train).

Default: the value of the environment variable OMP_NUM_THREADS when it is set (PyTorch reads it
too), else DEFAULT_THREADS = 1. One thread, because on the 2-core machine we measured, shared
with other jobs, PyTorch's own default (one thread per core) made `taptr demo` several times
slower, and never clearly faster (docs/tracking.md, "Threads"). A dedicated machine with many
cores may gain from more: pass `--threads N`.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_THREADS = 1
THREADS_HELP = ("CPU threads for PyTorch (default: $OMP_NUM_THREADS when set, else "
                f"{DEFAULT_THREADS}: on a shared machine more threads were several times slower; "
                "docs/tracking.md, Threads)")


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """Add `--threads N` (default None: `default_threads()`) to a command's parser."""
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)


def default_threads() -> int:
    """OMP_NUM_THREADS when it holds a positive integer, else DEFAULT_THREADS."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return DEFAULT_THREADS
    return value if value >= 1 else DEFAULT_THREADS


def apply_threads(args: argparse.Namespace) -> int:
    """Set PyTorch's CPU threads from `args.threads` (None: `default_threads()`); returns the
    count. Raises `TaptrError` for a count below 1."""
    from taptr.device import set_threads

    count = default_threads() if args.threads is None else args.threads
    set_threads(count)
    return count
