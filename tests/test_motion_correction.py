"""The neighbour motion correction (ours; taptr.models.additions.motion_correction)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taptr import Tracker
from taptr import get_preset
from taptr.errors import TaptrError
from taptr.models import TrackingOptions, build_model
from taptr.models.additions.motion_correction import (MotionCorrection, correct_jumps,
                                                      neighbour_motion)
from taptr.models.taptrv2.common import inverse_sigmoid
from taptr.models.taptrv2.windows import FrameState, WindowBatch
from tracking_helpers import moving_square_frames


def grid(rows: int, cols: int, spacing: float = 10.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(rows) * spacing, torch.arange(cols) * spacing,
                            indexing="ij")
    return torch.stack((xs.flatten(), ys.flatten()), -1).float() + 50


def test_a_point_that_leaves_its_neighbours_stands_out():
    before = grid(3, 4)
    after = before + torch.tensor([2.0, 1.0])
    after[5] += torch.tensor([30.0, 0.0])
    checked = torch.ones(12, dtype=torch.bool)
    excess, median = neighbour_motion(before, after, checked, neighbours=8)
    assert excess[5] == pytest.approx(30.0)
    assert torch.allclose(median[5], torch.tensor([2.0, 1.0]))
    others = torch.arange(12) != 5
    assert excess[others].abs().max() < 1e-5  # one jumper does not move its neighbours' median


def test_too_few_points_or_unchecked_points_are_left_alone():
    before = grid(3, 3)
    after = before.clone()
    after[0] += 40
    excess, _ = neighbour_motion(before, after, torch.ones(9, dtype=torch.bool), neighbours=8)
    assert excess[0] > 30  # nine points: enough for eight neighbours
    checked = torch.ones(9, dtype=torch.bool)
    checked[8] = False
    excess, median = neighbour_motion(before, after, checked, neighbours=8)
    assert excess.abs().sum() == 0 and median.abs().sum() == 0


def test_neighbours_that_disagree_raise_the_bar():
    """The centre of a 3x3 grid moves 20 px while its eight neighbours scatter by about 11 px
    around a median of 0: the excess over their spread is 20 - 11.3; with still neighbours
    it is the full 20."""
    before = grid(3, 3)
    scatter = torch.tensor([[-8, -8], [0, -12], [8, -8], [-12, 0], [12, 0], [-8, 8], [0, 12],
                            [8, 8]], dtype=torch.float32)
    after = before.clone()
    after[[0, 1, 2, 3, 5, 6, 7, 8]] += scatter
    after[4] += torch.tensor([20.0, 0.0])
    checked = torch.ones(9, dtype=torch.bool)
    excess, _ = neighbour_motion(before, after, checked, neighbours=8)
    assert excess[4] == pytest.approx(20 - 8 * 2 ** 0.5, abs=1e-4)
    coherent = before.clone()
    coherent[4] += torch.tensor([20.0, 0.0])
    excess, _ = neighbour_motion(before, coherent, checked, neighbours=8)
    assert excess[4] == pytest.approx(20.0)


def as_logits(pixels: torch.Tensor, scale: float, layers: int = 2) -> torch.Tensor:
    """[N, 2] input pixels -> [Ld, 1, N, 4] position logits."""
    unit = pixels / scale
    logits = torch.cat((inverse_sigmoid(unit), torch.zeros_like(unit)), -1)
    return logits[None, None].expand(layers, 1, -1, -1).clone()


def to_pixels(logits: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.sigmoid(logits[..., :2]) * scale


def test_a_jump_is_replaced_by_the_neighbours_motion_in_every_layer():
    scale = 255.0
    start = grid(3, 4)
    step = torch.tensor([1.5, -0.5])
    frames = [start + step * t for t in range(4)]
    frames[2] = frames[2].clone()
    frames[3] = frames[3].clone()
    frames[2][0] += torch.tensor([40.0, 10.0])  # point 0 jumps at frame 2 and stays off
    frames[3][0] += torch.tensor([40.0, 10.0])
    frames[2][11] += torch.tensor([40.0, 10.0])  # point 11's query frame is 2: not checked
    logits = [as_logits(f, scale) for f in frames]
    apu = [a + 0.5 for a in logits]  # APU positions, somewhere else
    query_frames = torch.zeros(1, 12, dtype=torch.long)
    query_frames[0, 11] = 2
    corrected, corrected_apu = correct_jumps(logits[1:], apu[1:], logits[0], 1, query_frames,
                                             16.0, 8, (256, 256))
    out = [to_pixels(c, scale) for c in corrected]  # frames 1, 2, 3
    out_apu = [to_pixels(c, scale) for c in corrected_apu]
    expected = start + step * torch.arange(1, 4)[:, None, None].float()
    for layer in range(2):
        assert torch.allclose(out[1][layer, 0, 0], expected[1, 0], atol=1e-3)
        assert torch.allclose(out[2][layer, 0, 0], expected[2, 0], atol=1e-3)  # followed on
        assert torch.allclose(out_apu[1][layer, 0, 0], expected[1, 0], atol=1e-3)
    assert torch.equal(corrected_apu[1][:, :, 1:], apu[2][:, :, 1:])  # the others keep theirs
    assert torch.allclose(out[1][0, 0, 11], frames[2][11], atol=1e-3)
    assert torch.equal(corrected[0], logits[1])  # nothing jumped at frame 1: the same tensor
    untouched, _ = correct_jumps(logits[1:], apu[1:], logits[0], 1, query_frames, 100.0, 8,
                                 (256, 256))
    assert all(torch.equal(a, b) for a, b in zip(untouched, logits[1:]))


def test_a_corrected_position_carries_no_gradient_and_the_others_keep_theirs():
    scale = 255.0
    before = as_logits(grid(3, 4), scale, layers=1)
    moved = grid(3, 4) + 1.0
    moved[3] += 50
    now = as_logits(moved, scale, layers=1).requires_grad_(True)
    corrected, _ = correct_jumps([now], [now.detach()], before, 1, torch.zeros(1, 12).long(),
                                 16.0, 8, (256, 256))
    corrected[0][..., :2].sum().backward()
    assert now.grad[0, 0, 3, :2].abs().sum() == 0
    assert (now.grad[0, 0, torch.arange(12) != 3, :2] == 1).all()


def test_many_points_in_blocks_equal_one_block(monkeypatch):
    import taptr.models.additions.motion_correction as module

    torch.manual_seed(0)
    before = torch.rand(50, 2) * 200
    after = before + torch.randn(50, 2) * 3
    after[7] += 60
    checked = torch.rand(50) > 0.1
    whole = neighbour_motion(before, after, checked, neighbours=8)
    monkeypatch.setattr(module, "_ROW_BLOCK", 7)
    blocks = neighbour_motion(before, after, checked, neighbours=8)
    assert all(torch.allclose(a, b) for a, b in zip(whole, blocks))


def test_without_the_previous_frame_the_first_frame_is_not_checked():
    scale = 255.0
    frames = [grid(3, 4), grid(3, 4)]
    frames[0][0] += 60  # would be a jump relative to anything before it
    logits = [as_logits(f, scale) for f in frames]
    corrected, _ = correct_jumps(logits, logits, None, 0, torch.full((1, 12), -1), 16.0, 8,
                                 (256, 256))
    assert torch.equal(corrected[0], logits[0])
    # Frame 1 is checked against frame 0: point 0 comes back 60 px, its neighbours stand still.
    assert not torch.equal(corrected[1], logits[1])


def test_the_correction_is_a_tracking_option_that_streams_and_validates():
    assert build_model("small").default_options.motion_correction_px == 16.0
    assert build_model("taptrv2").default_options.motion_correction_px == 0.0  # the paper's
    with pytest.raises(TaptrError, match="motion_correction_px"):
        TrackingOptions(motion_correction_px=-1.0)
    torch.manual_seed(0)
    model = build_model(get_preset("tiny"))
    frames = moving_square_frames(14, 64, 96)
    xs, ys = np.meshgrid(np.linspace(10, 80, 4), np.linspace(10, 50, 3))
    queries = np.stack([np.zeros(12), xs.ravel(), ys.ravel()], 1).astype(np.float32)
    plain = Tracker(model).track(frames, queries=queries, progress=False)
    # On, but nothing is a jump: the same tracks.
    loose = Tracker(model, options={"motion_correction_px": 1e6}).track(
        frames, queries=queries, progress=False)
    np.testing.assert_array_equal(np.asarray(plain.tracks), np.asarray(loose.tracks))
    # Every deviation is a jump: in every window after the first, each motion is replaced by
    # its neighbours' median, so the points' motions spread less than without the correction.
    strict = Tracker(model, options={"motion_correction_px": 1e-3}).track(
        frames, queries=queries, progress=False)
    window = get_preset("tiny").window_stride

    def spread(tracks):
        motion = np.diff(np.asarray(tracks)[:, window:], axis=1)  # [N, t, 2]
        return np.abs(motion - np.median(motion, axis=0, keepdims=True)).mean()

    assert np.isfinite(np.asarray(strict.tracks)).all()
    assert spread(strict.tracks) < 0.75 * spread(plain.tracks)  # measured 0.35 vs 0.59


def test_a_jumped_point_follows_its_neighbours_and_the_others_stay():
    """Through the hook: point 5 jumps 40 px in frame 1 while all points move (3, 1) px per
    frame; after the window it is where its neighbours' median motion takes it, in frame 1 and
    in frame 2, and every other point is exactly as decoded."""
    scale = 255.0
    motion = torch.tensor([3.0, 1.0])
    decoded = [grid(3, 4) + motion * t for t in range(3)]
    for frame in decoded[1:]:
        frame[5] += torch.tensor([40.0, 0.0])
    logits = [as_logits(f, scale) for f in decoded]
    states = [FrameState(l, l, torch.zeros(1, 1, 12, 3), torch.zeros(1, 12, 4))
              for l in logits[1:]]
    session = MotionCorrection((256, 256)).start(TrackingOptions(motion_correction_px=16.0))
    window = WindowBatch(frame_ids=torch.tensor([1, 2]), states=states, memory=[], extras=[],
                         layout=None, query_frames=torch.zeros(1, 12, dtype=torch.long),
                         initial_content=torch.zeros(1, 12, 4), previous_positions=logits[0])
    corrected = session.after_window(window, states)
    others = torch.arange(12) != 5
    for offset, state in enumerate(corrected, 1):
        pixels = torch.sigmoid(state.position_logits[-1, 0, :, :2]) * scale
        assert torch.allclose(pixels[5], grid(3, 4)[5] + motion * offset, atol=0.05)
        assert torch.equal(state.position_logits[:, :, others], logits[offset][:, :, others])
        assert torch.equal(state.apu_logits[-1, 0, 5], state.position_logits[-1, 0, 5])
        assert torch.equal(state.vis_logits, states[offset - 1].vis_logits)
    assert MotionCorrection((256, 256)).start(TrackingOptions()) is None  # off by default


def test_every_frame_is_checked_offline_as_online(monkeypatch):
    """Frames before a window's first frame are freed once final; the stream keeps the last one
    so the correction checks every frame. Offline (length known) and online (unknown) give the
    same tracks except in the last window, as without the correction."""
    import taptr.models.additions.motion_correction as windows

    checked_frames = []
    original = windows.correct_jumps

    def spy(positions, apu, previous, first_frame, *args):
        if previous is not None:
            checked_frames.append(first_frame)
        return original(positions, apu, previous, first_frame, *args)

    monkeypatch.setattr(windows, "correct_jumps", spy)
    torch.manual_seed(0)
    model = build_model(get_preset("tiny"), TrackingOptions(motion_correction_px=0.5)).eval()
    tracker = Tracker(model)
    frames = moving_square_frames(21, 64, 96)
    xs, ys = np.meshgrid(np.linspace(10, 80, 4), np.linspace(10, 50, 3))
    queries = np.stack([np.zeros(12), xs.ravel(), ys.ravel()], 1).astype(np.float32)
    offline = tracker.track(frames, queries=queries, progress=False)
    # Windows start at 0, 4, 8, 12 and 13 (the last one aligned to the end of 21 frames).
    assert checked_frames == [4, 8, 12, 13]
    stream = tracker.stream(queries)
    updates = [stream.push(frame) for frame in frames] + [stream.finish()]
    online = np.full((12, len(frames), 2), np.nan, np.float32)
    for update in updates:
        if update is not None:
            online[:, update.frames] = update.tracks
    last_window = len(frames) - 8
    # Online pushes one frame at a time, offline four: the backbone's kernels round differently
    # per batch size (1e-7), which the tiny model's random weights amplify to 1e-4 px; a
    # frame the correction missed moves its points by whole pixels.
    np.testing.assert_allclose(online[:, :last_window], np.asarray(offline.tracks)[:, :last_window],
                               atol=1e-3)

