"""User-facing errors.

`TaptrError` marks a mistake in the user's input (missing file, bad query, wrong shape). The CLI
prints its message on one line and exits with status 2; the API lets it propagate.
"""


class TaptrError(Exception):
    """A problem with the user's input, reported as a one-line message."""
