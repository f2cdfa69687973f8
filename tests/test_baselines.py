"""Classical baselines: interface, determinism, accuracy on a translating texture."""

import numpy as np
import pytest

from taptr import coords
from taptr.errors import TaptrError
from taptr.evaluation.baselines import BaselineResult, chain_tracks, make_baseline, sample_flow
from taptr.evaluation.toydata import ToyMotion, make_toy_video

SIZE = (96, 80)  # (W, H), deliberately not square
NUM_FRAMES = 16


@pytest.fixture(scope="module")
def translating():
    """A texture moving (1.3, -0.7) px/frame, 20 points, no occluder; GT in pixels."""
    entry = make_toy_video(
        np.random.default_rng(0), NUM_FRAMES, SIZE, 20, ToyMotion((1.3, -0.7)), occluder=False
    )
    tracks = coords.tapvid_to_pixel(entry["points"].astype(np.float64), SIZE)
    return entry["video"], tracks, ~entry["occluded"]


def queries_at(tracks, frames):
    """float32 [N, 3] (t, x, y) taken from the GT at the given frame of each track."""
    frames = np.asarray(frames)
    xy = tracks[np.arange(len(frames)), frames]
    return np.concatenate([frames[:, None], xy], axis=1).astype(np.float32)


def test_static_equals_an_independent_computation():
    video = np.zeros((5, 8, 9, 3), dtype=np.uint8)
    queries = np.array([[0, 1.5, 2.0], [3, 7.25, -0.5], [4.4, 0, 0]], dtype=np.float32)
    result = make_baseline("static").track(video, queries)
    expected_tracks = np.empty((3, 5, 2), dtype=np.float32)
    for n in range(3):
        for t in range(5):
            expected_tracks[n, t] = queries[n, 1:]
    assert isinstance(result, BaselineResult)
    assert result.tracks.dtype == np.float32 and result.visible.dtype == bool
    np.testing.assert_array_equal(result.tracks, expected_tracks)
    np.testing.assert_array_equal(result.visible, np.ones((3, 5), dtype=bool))


@pytest.mark.parametrize("name", ["lk", "dis"])
def test_flow_trackers_follow_a_translating_texture_both_directions(name, translating):
    video, tracks, visible = translating
    # Queries spread over the clip: forward, backward and both from the middle.
    query_frames = np.arange(20) % NUM_FRAMES
    result = make_baseline(name).track(video, queries_at(tracks, query_frames))
    assert result.tracks.shape == (20, NUM_FRAMES, 2) and result.visible.shape == (20, NUM_FRAMES)
    error = np.linalg.norm(result.tracks - tracks, axis=-1)
    assert np.median(error[visible]) < 0.5
    assert np.percentile(error[visible], 95) < 1.0
    # Backward frames are tracked too, not left at the query position.
    before_query = np.arange(NUM_FRAMES)[None] < query_frames[:, None]
    assert np.percentile(error[visible & before_query], 95) < 1.0
    assert (result.visible == visible).mean() > 0.95


@pytest.mark.parametrize("name", ["static", "lk", "dis"])
def test_query_frame_is_exact_and_visible(name, translating):
    video, tracks, _ = translating
    query_frames = np.array([0, 5, 15])
    queries = queries_at(tracks, query_frames)
    result = make_baseline(name).track(video, queries)
    np.testing.assert_array_equal(result.tracks[np.arange(3), query_frames], queries[:, 1:])
    assert result.visible[np.arange(3), query_frames].all()


@pytest.mark.parametrize("name", ["lk", "dis"])
def test_flow_trackers_are_deterministic(name):
    entry = make_toy_video(np.random.default_rng(1), 8, (64, 64), 12, ToyMotion((0.8, 0.6), 0.01))
    tracks = coords.tapvid_to_pixel(entry["points"].astype(np.float64), (64, 64))
    queries = queries_at(tracks, np.arange(12) % 8)
    first = make_baseline(name).track(entry["video"], queries)
    second = make_baseline(name).track(entry["video"].copy(), queries.copy())
    np.testing.assert_array_equal(first.tracks, second.tracks)
    np.testing.assert_array_equal(first.visible, second.visible)


def test_chain_tracks_marks_points_leaving_the_frame_invisible():
    def move_right(source, target, points):  # 10 px per frame forward, back on reversal
        return points + np.array([10.0 * (target - source), 0.0], dtype=np.float32), np.ones(
            len(points), dtype=bool
        )

    # The image spans x in [-0.5, 19.5] (pixel centres 0..19).
    queries = np.array([[2, 9.625, 3.0]], dtype=np.float32)
    result = chain_tracks(queries, 5, (20, 10), move_right)
    np.testing.assert_allclose(result.tracks[0, :, 0], [-10.375, -0.375, 9.625, 19.625, 29.625])
    np.testing.assert_array_equal(result.visible[0], [False, True, True, False, False])


def test_chain_tracks_uses_the_step_reliability():
    def unreliable(source, target, points):
        return points, np.zeros(len(points), dtype=bool)

    result = chain_tracks(np.array([[1, 2.0, 2.0]], dtype=np.float32), 3, (5, 5), unreliable)
    np.testing.assert_array_equal(result.visible[0], [False, True, False])


def test_sample_flow_is_bilinear():
    flow = np.zeros((4, 5, 2), dtype=np.float32)
    flow[..., 0] = np.arange(5)[None, :]  # flow x = column index
    flow[..., 1] = np.arange(4)[:, None] * 2.0  # flow y = 2 * row index
    sampled = sample_flow(flow, np.array([[1.25, 2.5], [3.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(sampled, [[1.25, 5.0], [3.0, 0.0]], atol=1e-4)


def test_bad_inputs_and_names():
    with pytest.raises(TaptrError, match="unknown baseline"):
        make_baseline("raft")
    with pytest.raises(TaptrError, match="queries must be"):
        make_baseline("lk").track(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((2, 2), np.float32))
    with pytest.raises(TaptrError, match="video must be"):
        make_baseline("dis").track(np.zeros((3, 8, 8), np.uint8), np.zeros((2, 3), np.float32))


def test_static_keeps_float64_queries_exact_and_flow_trackers_return_float32(translating):
    video, tracks, _ = translating
    queries = queries_at(tracks, np.zeros(20, dtype=int)).astype(np.float64)
    queries[:, 1] += 1e-9  # not representable in float32
    static = make_baseline("static").track(video, queries)
    assert static.tracks.dtype == np.float64
    np.testing.assert_array_equal(static.tracks[:, 3], queries[:, 1:])
    assert make_baseline("lk").track(video, queries).tracks.dtype == np.float32
