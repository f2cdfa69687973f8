"""`taptr eval` (not implemented yet)."""

from taptr.errors import TaptrError


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="(not implemented yet)")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise TaptrError("'taptr eval' is not implemented yet")
