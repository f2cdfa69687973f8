"""Helpers to run the official test vectors (`TAPTR_OFFICIAL_CASES`, default
../shared/testdata/official).

Without them the tests that need them are skipped, except under `CI=true`, where they fail:
CI must not pass the README's parity claim unverified."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASES = REPO.parent / "shared" / "testdata" / "official"


# What the tests read: the key list, the seeded weight generator, the cases.
CASE_FILES = ("keys.json", "seeded_weights.py", "case_*.npz")


def cases_dir() -> Path:
    return Path(os.environ.get("TAPTR_OFFICIAL_CASES", DEFAULT_CASES))


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_cases(patterns=CASE_FILES) -> Path:
    """The cases directory, when each glob pattern matches a file in it; otherwise skip the
    calling test, or fail it under CI=true."""
    directory = cases_dir()
    missing = [pattern for pattern in patterns if not any(directory.glob(pattern))]
    if missing:
        message = (f"official test vectors missing in {directory}: {', '.join(missing)} "
                   "(set TAPTR_OFFICIAL_CASES)")
        if running_in_ci():
            pytest.fail(f"{message}; under CI=true they are required", pytrace=False)
        pytest.skip(message)
    return directory


def seeded_state(seed: int) -> dict[str, np.ndarray]:
    directory = cases_dir()
    spec = importlib.util.spec_from_file_location("seeded_weights", directory / "seeded_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seeded_state_dict(module.load_keys(str(directory / "keys.json")), seed)


def case_inputs(case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """video [1, T, 3, H, W], query points [1, N, 2], query frames [1, N] of a case."""
    video = torch.from_numpy(case["video"])[None]
    frames = torch.from_numpy(case["query_frames"])
    boxes = torch.from_numpy(case["pt_boxes"])
    points = boxes[torch.arange(len(frames)), frames, :2]
    return video, points[None], frames[None]
