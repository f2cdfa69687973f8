"""Seed derivation, the one home for it: independent, well-mixed streams from tuples of ints and
strings (scene engine, Kubric order and augmentation, training data and generators,
validation sets)."""

from __future__ import annotations

import hashlib

import numpy as np


def _words(part: int | str) -> list[int]:
    """An int -> itself (NumPy `SeedSequence` takes any non-negative int); a string -> a stable
    64-bit number from its UTF-8 bytes (BLAKE2b), as two 32-bit words tagged apart from ints."""
    if isinstance(part, str):
        digest = hashlib.blake2b(part.encode("utf-8"), digest_size=8).digest()
        return [0x5EED, int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")]
    return [int(part)]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of non-negative ints and strings (seed, rank, worker, index,
    "stream name", ...), stable across runs and platforms.

    Different tuples give statistically independent streams (NumPy `SeedSequence` mixing).
    Tuples of ints give the values this function has always given (the scene engine's clips
    and the held-out benchmarks depend on them).
    """
    entropy = [word for part in parts for word in _words(part)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) >> 1
