"""`taptr textures` (not implemented yet)."""

from taptr.errors import TaptrError


def register(subparsers) -> None:
    parser = subparsers.add_parser("textures", help="(not implemented yet)")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise TaptrError("'taptr textures' is not implemented yet")
