"""Fixtures shared by several test files. Plain helpers (clips, video writers, the seeded tiny
model, `single_thread`, `colours_at`) live in `tracking_helpers.py`; a fixture used by one
file only stays in that file.

- `one_thread`: PyTorch on one thread for a whole module, restored afterwards; a module asks
  for it with `pytestmark = pytest.mark.usefixtures("one_thread")`.
- `tracker`: a `Tracker` around the tiny preset with seeded random weights, on the CPU.
- `tiny_weights`: the same model saved as our safetensors weights (a path string).
"""

from __future__ import annotations

import pytest

from tracking_helpers import single_thread, tiny_tracker, tiny_weights_file


@pytest.fixture(scope="module")
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def tracker():
    return tiny_tracker()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> str:
    return str(tiny_weights_file(str(tmp_path_factory.mktemp("weights"))))
