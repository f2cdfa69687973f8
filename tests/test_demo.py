"""`taptr demo` and the bundled default weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taptr.cli import main as cli_main
from taptr.demo import find_demo_video, longest_shot, shot_boundaries
from taptr.models import build_model
from taptr.models.registry import list_models
from taptr.weights import load_weights, save_weights


def test_shots_are_cut_at_scene_changes():
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 255, (1, 24, 32, 3)) for _ in range(3)]
    lengths = [5, 9, 4]
    frames = np.concatenate([np.repeat(s, n, 0) for s, n in zip(scenes, lengths)]).astype(np.uint8)
    frames = np.clip(frames + rng.integers(-3, 4, frames.shape), 0, 255).astype(np.uint8)
    assert shot_boundaries(frames) == [5, 14]
    assert longest_shot(frames) == (5, 14)
    assert longest_shot(frames, max_frames=6) == (5, 11)


def test_the_default_weights_are_bundled_and_load():
    assert "taptr-small" in list_models(pretrained=True)
    model = load_weights()  # the default
    assert model.config.name == "small"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_demo_command_writes_the_overlay_and_tracks(tmp_path, capsys):
    torch.manual_seed(0)
    weights = save_weights(build_model("tiny"), tmp_path / "tiny.safetensors")
    out = tmp_path / "demo"
    assert cli_main(["demo", "--out", str(out), "--grid", "2", "--weights", str(weights)]) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"overlay.mp4", "tracks.npz", "tracks.csv"}
    assert "overlay video" in printed and str(out) in printed
    tracks = np.load(out / "tracks.npz")
    assert tracks["tracks"].shape[0] == 4
    if find_demo_video() is not None:
        assert "bikes.mp4" in printed


def test_demo_refuses_a_bad_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main(["demo", "--out", str(blocker / "sub")]) == 2
    assert "error" in capsys.readouterr().err
