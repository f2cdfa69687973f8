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


def test_with_every_addition_off_the_small_model_is_the_plain_paper_stream(easy_clips):
    """`TrackingOptions.plain()`: the bundled network with our hooks off tracks exactly like
    the same weights in the paper's network with no hooks attached at all."""
    from taptr.models import TAPTRv2
    from taptr import load_model

    bundled = load_model(None)
    paper = TAPTRv2(bundled.config)  # no hooks: the paper's network and window loop
    state = {k: v for k, v in bundled.state_dict().items() if not k.startswith("hooks.")}
    paper.load_state_dict(state)
    sample = easy_clips[0]
    video, queries = sample.video.numpy(), sample.queries().numpy()
    plain = Tracker(bundled, device="cpu", options=bundled.default_options.plain())
    got = plain.track(video, queries=queries, progress=False)
    want = Tracker(paper, device="cpu").track(video, queries=queries, progress=False)
    np.testing.assert_array_equal(got.tracks, want.tracks)
    np.testing.assert_array_equal(got.visibility, want.visibility)
    ours = Tracker(bundled, device="cpu").track(video, queries=queries, progress=False)
    assert not np.array_equal(ours.tracks, got.tracks)  # the additions do change the tracks


def test_files_from_before_the_hooks_load_with_their_tracking_defaults():
    """The bundled file keeps its old keys (`decoder.correlation.*`) and the tracking fields in
    its config: both are mapped on load."""
    from safetensors import safe_open

    from taptr import load_model
    from taptr.weights import resolve_weights

    with safe_open(str(resolve_weights(None)), framework="pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("decoder.correlation.") for k in keys)
    model = load_model(None)
    assert model.default_options.template_update == 0.25
    assert model.default_options.motion_correction_px == 16.0
    with safe_open(str(resolve_weights(None)), framework="pt") as handle:
        for key in keys:
            new = key.replace("decoder.correlation.", "hooks.correlation.")
            assert torch.equal(model.state_dict()[new].float(), handle.get_tensor(key).float())
