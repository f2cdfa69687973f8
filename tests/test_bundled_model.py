"""The bundled weights must track: a broken, stale or untrained weights file fails here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taptr import Tracker
from taptr.data.scenes import SceneGenerator
from taptr.data.scenes.config import SceneConfig
from taptr.evaluation.baselines import make_baseline
from taptr.training.validation import score_pixels


@pytest.fixture(scope="module")
def easy_clips():
    """Two easy scenes with procedural textures (no download): 16 frames, 128x160."""
    config = SceneConfig(size=(128, 160), num_frames=16, num_points=48, difficulty=0.2,
                         min_foreground=0, max_foreground=2)
    generator = SceneGenerator(config)
    return [generator.generate(seed) for seed in (11, 12)]


def mean_aj(tracker, clips) -> float:
    scores = []
    for sample in clips:
        extra = {"progress": False} if isinstance(tracker, Tracker) else {}
        result = tracker.track(sample.video.numpy(), queries=sample.queries().numpy(), **extra)
        tracks = torch.as_tensor(np.asarray(result.tracks), dtype=torch.float32).transpose(0, 1)
        visible = torch.as_tensor(np.asarray(result.visible)).float().transpose(0, 1)
        scores.append(score_pixels(sample, tracks, visible)["AJ"])
    return float(np.mean(scores))


def test_the_bundled_model_beats_holding_points_still(easy_clips):
    torch.manual_seed(0)
    ours = mean_aj(Tracker.from_pretrained(), easy_clips)
    still = mean_aj(make_baseline("static"), easy_clips)
    assert ours > still + 0.25, (ours, still)
