"""The query options `taptr track` shares between one video and many (`--points`, `--queries`)."""

from __future__ import annotations


def explicit_queries(args):
    """The (t, x, y) rows of `--points` or `--queries` ([N, 3]), or None when neither is given.
    Raises `TaptrError` for a malformed string or file."""
    from taptr.io import parse_points, read_queries

    if args.points is not None:
        return parse_points(args.points)
    if args.queries is not None:
        return read_queries(args.queries)
    return None
