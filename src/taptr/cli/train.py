"""`taptr train` (not implemented yet)."""

from taptr.errors import TaptrError


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="(not implemented yet)")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise TaptrError("'taptr train' is not implemented yet")
