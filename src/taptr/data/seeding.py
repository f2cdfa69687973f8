"""Seeds for data pipelines: independent, well-mixed streams from tuples of integers."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, rank, worker, index, ...), stable across platforms.

    Different tuples give statistically independent streams (NumPy `SeedSequence` mixing).
    """
    state = np.random.SeedSequence([int(part) for part in parts]).generate_state(2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) >> 1
