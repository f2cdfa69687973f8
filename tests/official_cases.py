"""Helpers to run the official test vectors (`TAPTR_OFFICIAL_CASES`)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASES = REPO.parent / "shared" / "testdata" / "official"


def cases_dir() -> Path:
    return Path(os.environ.get("TAPTR_OFFICIAL_CASES", DEFAULT_CASES))


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
