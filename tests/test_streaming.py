"""Online tracking (taptr.streaming) against the offline result."""

from __future__ import annotations

import numpy as np
import pytest

from taptr.errors import TaptrError
from tracking_helpers import moving_square_frames


pytestmark = pytest.mark.usefixtures("one_thread")  # tracker: conftest.py

WINDOW, STRIDE = 8, 4  # every preset's window_size / window_stride
QUERIES = np.array([[0, 10, 12], [0, 30.5, 20.25], [3, 40, 30]], np.float32)


def test_the_tiny_preset_has_the_window_these_tests_assume(tracker):
    assert (tracker.config.window_size, tracker.config.window_stride) == (WINDOW, STRIDE)


@pytest.fixture(scope="module")
def clip():
    return moving_square_frames(21, 40, 56)


def _run(stream, frames, queries_at=None):
    """Push every frame (optionally with queries {frame: [[x, y], ...]}) and collect updates."""
    updates = []
    for index, frame in enumerate(frames):
        update = stream.push(frame, queries=(queries_at or {}).get(index))
        updates.append((index, update))
    updates.append((len(frames), stream.finish()))
    return updates


def _assemble(updates, num_points, num_frames):
    tracks = np.full((num_points, num_frames, 2), np.nan, np.float32)
    visibility = np.full((num_points, num_frames), np.nan, np.float32)
    for _, update in updates:
        if update is not None:
            assert np.isnan(tracks[update.ids][:, update.frames]).all()  # each frame once
            tracks[np.ix_(update.ids, update.frames)] = update.tracks
            visibility[np.ix_(update.ids, update.frames)] = update.visibility
    return tracks, visibility


def test_stream_equals_offline_except_the_last_window(tracker, clip):
    offline = tracker.track(clip, queries=QUERIES, backward=False, progress=False)
    updates = _run(tracker.stream(QUERIES), clip)
    tracks, visibility = _assemble(updates, 3, len(clip))
    assert np.isfinite(tracks).all()
    # 21 frames: offline windows start at 0, 4, 8, 12 and (end-aligned) 13. The stream returned
    # frames 13..15 after the window at 12, before learning where the video ends.
    differ = np.abs(tracks - offline.tracks).max(axis=(0, 2)) > 1e-3
    np.testing.assert_array_equal(np.flatnonzero(differ), [13, 14, 15])
    same = ~differ
    np.testing.assert_allclose(tracks[:, same], offline.tracks[:, same], atol=1e-3)
    np.testing.assert_allclose(visibility[:, same], offline.visibility[:, same], atol=1e-5)


def test_stream_with_known_length_equals_offline_everywhere(tracker, clip):
    offline = tracker.track(clip, queries=QUERIES, backward=False, progress=False)
    updates = _run(tracker.stream(QUERIES, num_frames=len(clip)), clip)
    tracks, visibility = _assemble(updates, 3, len(clip))
    np.testing.assert_allclose(tracks, offline.tracks, atol=1e-4)
    np.testing.assert_allclose(visibility, offline.visibility, atol=1e-5)


def test_latency_is_one_window(tracker, clip):
    updates = _run(tracker.stream(QUERIES), clip)
    arrivals = {index: list(update.frames) for index, update in updates if update is not None}
    assert min(arrivals) == WINDOW - 1  # the first window runs when its last frame arrives
    assert arrivals[WINDOW - 1] == list(range(STRIDE))
    for index, frames in arrivals.items():
        if index < len(clip):
            assert index - frames[0] <= WINDOW - 1 and len(frames) == STRIDE


def test_queries_pushed_with_a_frame_equal_offline(tracker, clip):
    offline = tracker.track(clip, queries=np.concatenate([QUERIES[:2], [[5, 20, 22]]]),
                            backward=False, progress=False)
    stream = tracker.stream(QUERIES[:2], num_frames=len(clip))
    updates = _run(stream, clip, queries_at={5: [[20, 22]]})
    tracks, _ = _assemble(updates, 3, len(clip))
    np.testing.assert_allclose(tracks, offline.tracks, atol=1e-4)
    assert (tracks[2, :6] == [20, 22]).all()  # before and at its query frame


def test_add_and_remove_queries(tracker, clip):
    stream = tracker.stream(QUERIES[:2])
    for frame in clip[:9]:
        stream.push(frame)
    new_ids = stream.add_queries([[15, 15], [33, 22]])  # on frame 8, the one pushed last
    np.testing.assert_array_equal(new_ids, [2, 3])
    np.testing.assert_array_equal(stream.queries[2:, 0], [8, 8])
    stream.remove_queries([0])
    update = None
    for frame in clip[9:16]:
        update = stream.push(frame) or update
    np.testing.assert_array_equal(update.ids, [1, 2, 3])
    assert update.tracks.shape == (3, STRIDE, 2)
    # removing only hides: point 1 is tracked as without the removal
    reference = tracker.stream(QUERIES[:2])
    reference_updates = [reference.push(frame) for frame in clip[:9]]
    reference.add_queries([[15, 15], [33, 22]])
    reference_updates += [reference.push(frame) for frame in clip[9:16]]
    last = [u for u in reference_updates if u is not None][-1]
    np.testing.assert_allclose(update.tracks[0], last.tracks[1], atol=1e-5)
    with pytest.raises(TaptrError, match="unknown query ids"):
        stream.remove_queries([7])
    with pytest.raises(TaptrError, match="only be added on frame 15"):
        stream.add_queries([[3, 10, 10]])


def test_reset_starts_over(tracker, clip):
    stream = tracker.stream(QUERIES)
    first = _assemble(_run(stream, clip[:12]), 3, 12)[0]
    stream.reset(QUERIES)
    assert stream.frame_index == 0
    second = _assemble(_run(stream, clip[:12]), 3, 12)[0]
    np.testing.assert_array_equal(first, second)


def test_stream_input_errors(tracker, clip):
    stream = tracker.stream([[0, 100, 5]])
    with pytest.raises(TaptrError, match="outside the 56x40 frame"):
        stream.push(clip[0])
    stream = tracker.stream(QUERIES[:2], num_frames=2)
    stream.push(clip[0])
    with pytest.raises(TaptrError, match="earlier frames were 56x40"):
        stream.push(clip[1][:20])
    stream.push(clip[1])
    with pytest.raises(TaptrError, match="more frames"):
        stream.push(clip[2])
