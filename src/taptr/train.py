"""`python -m taptr.train ...`: the `taptr train` command as a module, for launchers.

    torchrun --nproc_per_node=4 -m taptr.train --preset small --steps 20000 --out runs/ddp

Takes exactly the arguments of `taptr train` (see `taptr train --help`).
"""

from __future__ import annotations

import argparse
import sys

from taptr.cli import show_library_messages
from taptr.cli import train as train_command
from taptr.errors import TaptrError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taptr.train",
                                     description=train_command.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    train_command.add_arguments(parser)
    show_library_messages("taptr train")
    args = parser.parse_args(argv)
    try:
        return train_command.run(args)
    except TaptrError as error:
        print(f"taptr train: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
