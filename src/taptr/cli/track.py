"""`taptr track` (not implemented yet)."""

from taptr.errors import TaptrError


def register(subparsers) -> None:
    parser = subparsers.add_parser("track", help="(not implemented yet)")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise TaptrError("'taptr track' is not implemented yet")
