"""Wording of user-facing messages.

`count(1, "point")` -> "1 point", `count(3, "point")` -> "3 points",
`count(2, "query", "queries")` -> "2 queries". Every message that states how many of
something there are goes through `count`, so none says "1 points" or "video(s)".
"""

from __future__ import annotations


def count(number: int, noun: str, plural: str | None = None) -> str:
    """`number` followed by `noun`, in the plural unless `number` is exactly 1.

    plural: the plural form when it is not `noun + "s"` ("query" -> "queries").
    """
    return f"{number} {noun if number == 1 else (plural or noun + 's')}"
