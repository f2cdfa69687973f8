"""`taptr convert` (not implemented yet)."""

from taptr.errors import TaptrError


def register(subparsers) -> None:
    parser = subparsers.add_parser("convert", help="(not implemented yet)")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise TaptrError("'taptr convert' is not implemented yet")
