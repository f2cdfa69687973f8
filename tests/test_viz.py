"""Overlay drawing (taptr.viz)."""

from __future__ import annotations

import numpy as np
import pytest

from taptr.errors import TaptrError
from taptr.result import TrackResult
from taptr.viz import draw_tracks, point_colors


def _result(tracks, visible, queries, size=(64, 48), backward=True):
    tracks = np.asarray(tracks, np.float32)
    visible = np.asarray(visible, bool)
    return TrackResult(tracks, visible, visible.astype(np.float32),
                       np.asarray(queries, np.float32), size, 10.0, backward)


def _blank(num_frames=4, height=48, width=64):
    return np.zeros((num_frames, height, width, 3), np.uint8)


def test_colors_distinct_by_position_and_deterministic():
    points = np.array([[0, 0], [63, 0], [0, 47], [32, 24], [32.5, 24]], np.float32)
    colors = point_colors(points, (64, 48))
    assert colors.shape == (5, 3) and colors.dtype == np.uint8
    distinct = {tuple(c) for c in colors[:4]}
    assert len(distinct) == 4
    assert np.abs(colors[3].astype(int) - colors[4]).max() <= 10  # neighbours look alike
    np.testing.assert_array_equal(colors, point_colors(points, (64, 48)))


def test_visible_filled_occluded_hollow_or_hidden():
    tracks = np.tile(np.array([[[20.0, 20.0]]]), (1, 4, 1))
    result = _result(tracks, [[True, True, False, False]], [[0, 20, 20]])
    style = dict(trail=0, query_marker_frames=0, radius=5)
    hollow = list(draw_tracks(_blank(), result, **style))
    assert hollow[1][20, 20].any()  # filled disc: the centre is coloured
    assert not hollow[2][20, 20].any() and hollow[2][20, 25].any()  # ring: centre empty
    hidden = list(draw_tracks(_blank(), result, occluded="hidden", **style))
    assert not hidden[2].any()


def test_trail_length():
    num_frames = 6
    tracks = np.stack([np.stack([5.0 + 10 * t, 10.0]) for t in range(num_frames)])[None]
    result = _result(tracks, np.ones((1, num_frames), bool), [[0, 5, 10]])
    style = dict(query_marker_frames=0, radius=2)
    short = list(draw_tracks(_blank(num_frames), result, trail=1, **style))[-1]
    full = list(draw_tracks(_blank(num_frames), result, trail=-1, **style))[-1]
    assert not short[10, 10].any() and short[10, 50].any()  # trail only reaches x=45
    assert full[10, 10].any()  # the whole history


def test_query_marker_and_forward_only_hides_points_before_query():
    tracks = np.full((1, 4, 2), 30.0, np.float32)
    result = _result(tracks, [[False, False, True, True]], [[2, 30, 30]], backward=False)
    frames = list(draw_tracks(_blank(), result, trail=0, query_marker_frames=1, radius=2))
    assert not frames[0].any() and not frames[1].any()  # not tracked before its query frame
    assert frames[2][30 - 4, 30 - 4].any()  # the cross's arm reaches beyond the disc
    assert not frames[3][30 - 4, 30 - 4].any()


def test_draw_is_lazy_and_checks_length():
    result = _result(np.zeros((1, 2, 2)), np.ones((1, 2), bool), [[0, 0, 0]])

    def frames():
        yield np.zeros((48, 64, 3), np.uint8)
        raise AssertionError("read too far")

    drawn = draw_tracks(frames(), result)
    assert next(drawn).shape == (48, 64, 3)
    with pytest.raises(TaptrError, match="more frames"):
        list(draw_tracks(_blank(3), result))
    with pytest.raises(TaptrError, match="occluded"):
        list(draw_tracks(_blank(2), result, occluded="dotted"))


def test_save_overlay_writes_video(tmp_path):
    from taptr.io import open_video

    frames = _blank(5)
    result = _result(np.full((2, 5, 2), 10.0), np.ones((2, 5), bool), [[0, 10, 10], [0, 10, 10]])
    result.video = frames
    result.save_overlay(tmp_path / "o.mp4")
    result.save_overlay(tmp_path / "o.gif", trail=3)
    for name in ("o.mp4", "o.gif"):
        video = open_video(tmp_path / name)
        assert video.num_frames == 5 and video.size == (64, 48)
        assert video.read_frames()[0, 10, 10].max() > 100
    with pytest.raises(TaptrError, match="does not match"):
        result.save_overlay(tmp_path / "x.mp4", video=_blank(3))
    assert not (tmp_path / "x.mp4").exists()
