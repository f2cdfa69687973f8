"""The dense optical-flow prior (ours, models/additions/flow_prior.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from taptr import coords
from taptr.errors import TaptrError
from taptr.models.additions.flow_prior import (ANCHOR_FB_PX, FlowPrior, FlowPriorSession,
                                               gray_from_normalised)
from taptr.models.options import TrackingOptions
from taptr.models.taptrv2.common import inverse_sigmoid
from taptr.models.taptrv2.windows import FrameState, WindowBatch
from taptr.preprocess import normalize

SIZE = (64, 96)  # (H_in, W_in)
SHIFT = (2.0, -1.0)  # (dx, dy) input pixels per frame


def _translated_frames(count: int) -> np.ndarray:
    """A smooth random texture moving by SHIFT each frame: uint8 [T, H, W, 3]."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (200, 240, 3), dtype=np.uint8), (0, 0), 2)
    frames = []
    for t in range(count):
        x0, y0 = 60 - int(SHIFT[0] * t), 60 - int(SHIFT[1] * t)
        frames.append(texture[y0:y0 + SIZE[0], x0:x0 + SIZE[1]])
    return np.stack(frames)


def _state(points_px: torch.Tensor, layers: int = 2) -> FrameState:
    """Every layer at the given points [B, N, 2] (input pixels), 'visible'."""
    logits = inverse_sigmoid(coords.input_to_model(points_px, (SIZE[1], SIZE[0])))
    logits = torch.cat((logits, torch.zeros_like(logits)), -1)[None].expand(layers, -1, -1, -1)
    batch, count = points_px.shape[:2]
    return FrameState(logits.clone(), logits.clone(), torch.zeros(layers, batch, count, 3),
                      torch.zeros(batch, count, 8))


def _positions(state: FrameState) -> torch.Tensor:
    """[Ld, B, N, 2] input pixels of every layer."""
    return coords.model_to_input(torch.sigmoid(state.position_logits[..., :2]),
                                 (SIZE[1], SIZE[0]))


def test_gray_of_the_network_input_is_opencvs_gray():
    frames = _translated_frames(2)
    gray = gray_from_normalised(normalize(torch.from_numpy(frames)))
    want = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    assert gray.shape == (2, 1, *SIZE)
    assert np.abs(gray[:, 0].numpy() - want).max() <= 1


def test_new_frames_start_where_the_flow_takes_each_tracked_point():
    frames = _translated_frames(6)
    hook = FlowPrior(SIZE)
    gray = hook.frame_features(normalize(torch.from_numpy(frames)), [])[0]  # [T, 1, H, W]
    start = torch.tensor([[[40.0, 30.0], [50.0, 20.0], [30.0, 40.0]]])  # [1, 3, 2]
    # Point 0 is queried at frame 0, point 1 at frame 2, point 2 at frame 9 (not yet tracked).
    query_frames = torch.tensor([[0, 2, 9]])
    window = WindowBatch(frame_ids=torch.arange(6), states=[_state(start) for _ in range(6)],
                         memory=[], extras=[{"flow_prior": [g[None]]} for g in gray],
                         layout=None, query_frames=query_frames,
                         initial_content=torch.zeros(1, 3, 8))
    session = hook.start(TrackingOptions(flow_prior=True, flow_preset="medium",
                                         flow_consistency=True))
    assert isinstance(session, FlowPriorSession)
    session.before_window(window)
    shift = torch.tensor(SHIFT)
    for frame, state in enumerate(window.states):
        got = _positions(state)  # [Ld, 1, 3, 2]
        moved0 = start[0, 0] + frame * shift
        moved1 = start[0, 1] + max(0, frame - 2) * shift
        assert torch.allclose(got[:, 0, 0], moved0.expand_as(got[:, 0, 0]), atol=0.25)
        assert torch.allclose(got[:, 0, 1], moved1.expand_as(got[:, 0, 1]), atol=0.25)
        assert torch.allclose(got[:, 0, 2], start[0, 2].expand_as(got[:, 0, 2]), atol=1e-3)
        assert torch.equal(state.apu_logits[..., :2], state.position_logits[..., :2])
        if frame >= 1:  # a consistent flow: the forward-backward error is small
            error = session.consistency[frame][0]
            assert float(error[0]) < 0.5 and torch.isnan(error[2])
    # The next window moves only frames no window has decoded yet.
    session.after_window(window, window.states)
    decoded = [FrameState(s.position_logits, s.apu_logits, s.vis_logits, s.content)
               for s in window.states]
    later = WindowBatch(frame_ids=torch.arange(2, 6), states=decoded[2:],
                        memory=[], extras=[{"flow_prior": [g[None]]} for g in gray[2:]],
                        layout=None, query_frames=query_frames,
                        initial_content=torch.zeros(1, 3, 8))
    session.before_window(later)
    for old, new in zip(decoded[2:], later.states):
        assert torch.equal(old.position_logits, new.position_logits)
    session.release(4)
    assert min(session.consistency) >= 4


def test_the_flow_prior_is_an_option_and_off_in_the_plain_stream():
    hook = FlowPrior(SIZE)
    assert hook.start(None) is None
    assert hook.start(TrackingOptions()) is None
    assert TrackingOptions(flow_prior=True).plain().flow_prior is False
    assert TrackingOptions().with_overrides(["flow_prior=on"]).flow_prior is True
    with pytest.raises(TaptrError, match="flow_preset"):
        TrackingOptions(flow_preset="slow")
    session = hook.start(TrackingOptions(flow_prior=True))
    assert session.with_consistency is False and session.flow.preset == "fast"


def test_a_tracker_with_the_flow_prior_follows_a_translation():
    """The bundled model with the prior on keeps points on a translating texture (the prior
    starts each new frame where the flow takes it; the decoder refines from there)."""
    from taptr.tracker import Tracker

    frames = np.repeat(np.repeat(_translated_frames(16), 3, axis=1), 3, axis=2)  # 192x288
    tracker = Tracker.from_pretrained(device="cpu", options={"flow_prior": True})
    queries = np.array([[0, 100.0, 90.0], [0, 150.0, 60.0], [0, 200.0, 120.0]])
    result = tracker.track(frames, queries=queries, progress=False)
    want = queries[:, None, 1:] + np.arange(16)[None, :, None] * (3 * np.array(SHIFT))
    error = np.linalg.norm(result.tracks - want, axis=-1)
    assert np.median(error) < 2.0
    assert result.visible.mean() > 0.9


@pytest.mark.parametrize("flag", [True, False])
def test_track_cli_turns_the_flow_prior_off(flag):
    import argparse

    from taptr.cli import tracking_options

    parser = argparse.ArgumentParser()
    tracking_options.add_arguments(parser)
    args = parser.parse_args(["--no-flow-prior"] if flag else [])
    changes = tracking_options.option_changes(args) or {}
    assert changes.get("flow_prior", True) is (not flag)


def test_points_the_flow_takes_out_of_the_frame_are_occluded_there():
    """A texture moving right by 6 input pixels a frame carries the right-most point out of
    the frame: occluded from then on; a point that stays inside, near the border or not,
    keeps the model's visibility."""
    from taptr.tracker import Tracker

    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (200, 400, 3), dtype=np.uint8), (0, 0), 2)
    frames = np.stack([texture[40:40 + SIZE[0], 150 - 6 * t:150 - 6 * t + SIZE[1]]
                       for t in range(12)])  # [12, 64, 96, 3]: content moves right
    frames = np.repeat(np.repeat(frames, 3, axis=1), 3, axis=2)  # 192x288 video pixels
    queries = np.array([[0, 240.0, 96.0], [0, 60.0, 96.0], [0, 2.0, 100.0]])
    tracker = Tracker.from_pretrained(device="cpu", options={"flow_prior": True})
    result = tracker.track(frames, queries=queries, progress=False)
    # 18 video px a frame: point 0 from x = 240 is beyond 288 after frame 3; points 1 and 2
    # (starting 2 px from the left edge) end at x = 258 and 200.
    assert not result.visible[0, 4:].any()
    assert (result.visibility[0, 4:] < 1e-3).all()  # the prior's occluded logit
    # The others keep the model's own visibility (never the prior's occluded logit).
    assert (result.visibility[1:] > 1e-2).all() and result.visible[1].all()
    plain = Tracker.from_pretrained(device="cpu", options={"flow_prior": False})
    assert plain.track(frames, queries=queries, progress=False).visible[0, 4:].any()


@pytest.mark.parametrize("follow", [True, False])
def test_a_point_called_occluded_takes_the_flows_position_when_asked(follow):
    frames = _translated_frames(4)
    hook = FlowPrior(SIZE)
    gray = hook.frame_features(normalize(torch.from_numpy(frames)), [])[0]
    start = torch.tensor([[[40.0, 30.0], [50.0, 20.0]]])
    window = WindowBatch(frame_ids=torch.arange(4), states=[_state(start) for _ in range(4)],
                         memory=[], extras=[{"flow_prior": [g[None]]} for g in gray],
                         layout=None, query_frames=torch.tensor([[0, 0]]),
                         initial_content=torch.zeros(1, 2, 8))
    session = hook.start(TrackingOptions(flow_prior=True, flow_preset="medium",
                                         flow_follows_occluded=follow))
    session.before_window(window)
    flowed = [_positions(s) for s in window.states]
    # The decoder "answers": every point back at its start, point 0 occluded, point 1 visible.
    decoded = []
    for _ in range(4):
        state = _state(start)
        state.vis_logits[..., 1] = torch.tensor([[-3.0, 3.0]])
        decoded.append(state)
    result = session.after_window(window, decoded)
    assert TrackingOptions().flow_follows_occluded is False  # the default: off
    for frame in range(1, 4):
        got = _positions(result[frame])[:, 0]  # [Ld, 2, 2]
        want0 = flowed[frame][:, 0, 0] if follow else start[0, 0].expand(2, 2)
        assert torch.allclose(got[:, 0], want0, atol=1e-3)
        assert torch.allclose(got[:, 1], start[0, 1].expand(2, 2), atol=1e-3)
        assert torch.equal(result[frame].apu_logits[..., :2], result[frame].position_logits[..., :2])
    # At the query frame nothing moves.
    assert torch.allclose(_positions(result[0])[:, 0, 0], start[0, 0].expand(2, 2), atol=1e-3)


def test_prepared_frames_carry_a_gray_source_only_when_the_options_ask():
    from taptr.model_io import ModelIO
    from taptr.loading import create_model

    frame = np.repeat(np.repeat(_translated_frames(1)[0], 3, axis=0), 3, axis=1)  # 192x288
    model = create_model("small", pretrained=False)
    cases = [({}, None), ({"flow_prior": True}, None),
             ({"flow_prior": True, "flow_resolution": 144}, (96, 144)),
             ({"flow_prior": True, "flow_resolution": 4096}, (192, 288))]  # never scaled up
    for changes, shape in cases:
        io = ModelIO(model, device="cpu", options=TrackingOptions(**changes))
        prepared = io.prepare_frame(frame)
        assert prepared.image.shape == (3, *io.input_size)
        if shape is None:
            assert prepared.source is None and io.source_input([prepared]) is None
        else:
            assert prepared.source.shape == shape and prepared.source.dtype == np.uint8
            assert io.source_input([prepared, prepared]).shape == (1, 2, *shape)
    want = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    io = ModelIO(model, device="cpu", options=TrackingOptions(flow_prior=True,
                                                              flow_resolution=288))
    assert np.array_equal(io.prepare_frame(frame).source, want)
    with pytest.raises(TaptrError, match="flow_resolution"):
        TrackingOptions(flow_resolution=-1)


def test_the_flow_runs_on_the_video_frames_offline_and_streaming_alike():
    """With `flow_resolution` the prior's flow runs on the video's own frames (here 192x288,
    not the network's 256x256 input): the tracker follows a translation closely, and a stream
    fed frame by frame (which hands the same source frames to the model) gives the same
    tracks as offline."""
    from taptr.tracker import Tracker

    frames = np.repeat(np.repeat(_translated_frames(16), 3, axis=1), 3, axis=2)  # 192x288
    options = {"flow_prior": True, "flow_resolution": 4096, "flow_anchor": True}
    tracker = Tracker.from_pretrained(device="cpu", options=options)
    queries = np.array([[0, 100.0, 90.0], [0, 150.0, 60.0], [0, 200.0, 120.0]])
    result = tracker.track(frames, queries=queries, backward=False, progress=False)
    want = queries[:, None, 1:] + np.arange(16)[None, :, None] * (3 * np.array(SHIFT))
    assert np.median(np.linalg.norm(result.tracks - want, axis=-1)) < 1.0
    online = tracker.stream(queries=queries, num_frames=len(frames))
    updates = [online.push(frame) for frame in frames] + [online.finish()]
    streamed = np.concatenate([u.tracks for u in updates if u is not None], 1)
    assert np.allclose(streamed, result.tracks, atol=1e-4)


def test_the_anchor_keeps_the_flows_position_where_it_is_reliable():
    """flow_anchor: a decoder position far from the reliable flow's is replaced by the flow's;
    near it, the position whose patch matches the query frame's better stands."""
    frames = _translated_frames(4)
    hook = FlowPrior(SIZE)
    gray = hook.frame_features(normalize(torch.from_numpy(frames)), [])[0]
    start = torch.tensor([[[40.0, 30.0], [50.0, 25.0], [30.0, 35.0]]])
    window = WindowBatch(frame_ids=torch.arange(4), states=[_state(start) for _ in range(4)],
                         memory=[], extras=[{"flow_prior": [g[None]]} for g in gray],
                         layout=None, query_frames=torch.tensor([[0, 0, 0]]),
                         initial_content=torch.zeros(1, 3, 8))
    session = hook.start(TrackingOptions(flow_prior=True, flow_preset="medium",
                                         flow_anchor=True))
    session.add_points(3)
    session.before_window(window)
    truth = [start + torch.tensor(SHIFT) * t for t in range(4)]
    for frame in range(1, 4):  # the flow follows the translation and passes the check
        out, moved = session.outside[frame]
        assert (session.consistency[frame] < ANCHOR_FB_PX * max(SIZE) / 256).all()
        assert torch.allclose(moved, truth[frame], atol=0.3)
        # Point 2's flow position, moved off the truth by 1 px (within the radius).
        moved[0, 2] = truth[frame][0, 2] + torch.tensor([1.0, 0.0])
    # The decoder "answers": point 0 left at its start (lost: far from the flow), point 1
    # 0.7 px off the truth, point 2 exactly on it.
    decoded = [_state(torch.stack([start[0, 0], truth[t][0, 1] + torch.tensor([0.7, 0.0]),
                                   truth[t][0, 2]])[None]) for t in range(4)]
    for state in decoded:
        state.vis_logits[..., 1] = 3.0
    result = session.after_window(window, decoded)
    for frame in range(1, 4):
        got = _positions(result[frame])[-1, 0]  # [3, 2]
        moved = session.outside[frame][1][0]
        assert torch.allclose(got[0], moved[0], atol=1e-3)  # lost: the flow's
        assert torch.allclose(got[1], moved[1], atol=1e-3)  # the flow's matches better
        assert torch.allclose(got[2], truth[frame][0, 2], atol=1e-3)  # the decoder's does
    off = hook.start(TrackingOptions(flow_prior=True))
    assert off.anchor is False and off.with_consistency is False


def test_points_added_to_a_live_stream_after_a_window_are_tracked():
    """Queries added to a stream after the flow prior has per-frame state (the bundled
    defaults: prior, anchor, flow on the video frames) join without error and follow the
    texture like the first ones."""
    from taptr.tracker import Tracker

    frames = np.repeat(np.repeat(_translated_frames(20), 3, axis=1), 3, axis=2)  # 192x288
    tracker = Tracker.from_pretrained(device="cpu")
    online = tracker.stream(queries=[[0, 100.0, 90.0], [0, 150.0, 60.0]])
    updates = []
    for index, frame in enumerate(frames):
        if index == 10:  # after windows ran: the prior holds state for 2 points
            online.add_queries([[120.0, 100.0], [200.0, 110.0], [60.0, 80.0]], frame=9)
        updates.append(online.push(frame))
    updates.append(online.finish())
    final = [u for u in updates if u is not None]
    last = final[-1]
    assert list(last.ids) == [0, 1, 2, 3, 4]
    start = np.array([[100.0, 90.0], [150.0, 60.0], [120.0, 100.0], [200.0, 110.0], [60.0, 80.0]])
    moved = 3 * np.array(SHIFT) * (19 - np.array([0, 0, 9, 9, 9]))[:, None]
    error = np.linalg.norm(last.tracks[:, -1] - (start + moved), axis=-1)
    assert np.median(error) < 2.0, error


def test_a_tiny_video_falls_back_to_the_network_frames_for_the_flow():
    from taptr.tracker import Tracker

    frames = _translated_frames(10)[:, :8, :10]  # 10x8 video pixels: too small for DIS
    tracker = Tracker.from_pretrained(device="cpu")
    result = tracker.track(frames, queries=np.array([[0, 5.0, 4.0]]), progress=False)
    assert np.isfinite(result.tracks).all()
