"""Video reading/writing, track files and query files (taptr.io)."""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from taptr.errors import TaptrError
from taptr.io import (
    load_tracks,
    open_video,
    parse_points,
    read_queries,
    save_tracks,
    write_video,
)
from taptr.io.atomic import atomic_path, staged_folder
from tracking_helpers import SHARED_VIDEOS, moving_square_frames, write_clip


# ----------------------------------------------------------------------------- reading

def test_mp4_frames_size_fps_and_lazy_ranges(tmp_path):
    frames = moving_square_frames(10, 48, 64)
    video = open_video(write_clip(tmp_path / "clip.mp4", frames, fps=12.5))
    assert (video.num_frames, video.size, video.fps) == (10, (64, 48), 12.5)
    decoded = video.read_frames()
    assert decoded.shape == (10, 48, 64, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 3  # crf 0, only colour conversion
    middle = np.stack(list(video.iter_frames(4, 7)))
    np.testing.assert_array_equal(middle, decoded[4:7])


@pytest.mark.parametrize("keyframe_interval", [None, 3])
def test_reverse_reading_matches_forward_with_small_buffer(tmp_path, keyframe_interval):
    frames = moving_square_frames(17, 32, 48)
    path = write_clip(tmp_path / "clip.mp4", frames, keyframe_interval=keyframe_interval)
    video = open_video(path)
    forward = video.read_frames()
    # A buffer of 3 frames forces 6+ segments, each seeking to its keyframe.
    backward = list(video.iter_frames_reversed(13, buffer_bytes=3 * forward[0].nbytes))
    assert len(backward) == 13
    np.testing.assert_array_equal(np.stack(backward), forward[:13][::-1])


def test_reverse_reading_buffers_at_most_budget(tmp_path):
    frames = moving_square_frames(20, 32, 48)
    video = open_video(write_clip(tmp_path / "clip.mp4", frames, keyframe_interval=4))
    calls = []
    original = video.iter_frames

    def recording(start=0, stop=None):
        calls.append((start, stop))
        return original(start, stop)

    video.iter_frames = recording
    frame_bytes = frames[0].nbytes
    assert len(list(video.iter_frames_reversed(buffer_bytes=5 * frame_bytes))) == 20
    assert max(stop - start for start, stop in calls) <= 5
    assert calls[0] == (19, 20) and calls[-1][0] == 0


def test_odd_size_video(tmp_path):
    frames = moving_square_frames(5, 37, 53)
    video = open_video(write_clip(tmp_path / "odd.mp4", frames))
    assert video.size == (53, 37)
    assert video.read_frames().shape == (5, 37, 53, 3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_phone_video_comes_out_upright(tmp_path, rotation):
    frames = np.zeros((3, 32, 64, 3), np.uint8)
    frames[:, :8, :8] = 255  # a white block in the top-left corner of the stored frame
    video = open_video(write_clip(tmp_path / "rot.mp4", frames, rotation=rotation))
    upright = np.rot90(frames[0], k=rotation // 90)
    assert video.size == (upright.shape[1], upright.shape[0])
    first = next(video.iter_frames())
    assert first.shape == upright.shape
    assert np.abs(first.astype(int) - upright).mean() < 8


def test_rotation_matches_opencv(tmp_path):
    import cv2

    frames = moving_square_frames(2, 32, 64)
    path = write_clip(tmp_path / "rot.mp4", frames, rotation=90)
    capture = cv2.VideoCapture(str(path))
    ok, reference = capture.read()
    capture.release()
    assert ok
    ours = next(open_video(path).iter_frames())
    assert np.abs(ours.astype(int) - reference[..., ::-1]).mean() < 2


def test_gif_roundtrip(tmp_path):
    frames = moving_square_frames(6, 30, 40)
    assert write_video(tmp_path / "a.gif", frames, fps=10) == "gif"
    video = open_video(tmp_path / "a.gif")
    assert (video.num_frames, video.size) == (6, (40, 30))
    assert abs(video.fps - 10) < 0.5
    assert np.abs(video.read_frames().astype(int) - frames).mean() < 12


def test_image_folder_natural_order(tmp_path):
    frames = moving_square_frames(11, 24, 32)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame{index}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    video = open_video(tmp_path, fps=5)
    assert (video.num_frames, video.size, video.fps) == (11, (32, 24), 5.0)
    np.testing.assert_array_equal(video.read_frames(), frames)  # frame10 after frame9


def test_image_folder_with_mixed_sizes_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "0.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "1.png")
    with pytest.raises(TaptrError, match="1.png.*one size"):
        open_video(tmp_path).read_frames()


def test_arrays_and_tensors():
    frames = moving_square_frames(4, 16, 24)
    from_float = open_video(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    assert (from_float.num_frames, from_float.size) == (4, (24, 16))
    np.testing.assert_array_equal(from_float.read_frames(), frames)
    batched = open_video(torch.from_numpy(frames)[None])
    np.testing.assert_array_equal(batched.read_frames(), frames)
    gray = open_video(frames[..., 0])
    assert gray.read_frames().shape == (4, 16, 24, 3)


@pytest.mark.skipif(not (SHARED_VIDEOS / "teddy.mp4").exists(), reason="shared videos absent")
def test_shared_portrait_video_with_edit_list():
    video = open_video(SHARED_VIDEOS / "teddy.mp4")
    assert video.size == (368, 480)
    assert video.num_frames == 141  # 142 packets, one discarded by the edit list
    assert sum(1 for _ in video.iter_frames()) == 141
    last_three = list(itertools.islice(video.iter_frames_reversed(141, buffer_bytes=1), 3))
    np.testing.assert_array_equal(np.stack(last_three[::-1]), video.read_frames(138, 141))


# ----------------------------------------------------------------------------- bad videos

def test_bad_video_inputs(tmp_path):
    with pytest.raises(TaptrError, match="no such file"):
        open_video(tmp_path / "missing.mp4")
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 10)
    with pytest.raises(TaptrError, match="not a video"):
        open_video(tmp_path / "notes.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(TaptrError, match="empty"):
        open_video(tmp_path / "empty.mp4")
    (tmp_path / "frames").mkdir()
    with pytest.raises(TaptrError, match="no images"):
        open_video(tmp_path / "frames")
    with pytest.raises(TaptrError, match="no frames"):
        open_video(np.zeros((0, 8, 8, 3), np.uint8))


def test_video_with_no_frames_is_refused(tmp_path):
    import av

    for name in ("noframes.mp4",):
        with av.open(str(tmp_path / name), "w") as container:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            container.start_encoding()
        with pytest.raises(TaptrError, match="has no frames"):
            open_video(tmp_path / name)


# ----------------------------------------------------------------------------- writing

@pytest.fixture
def warnings_logged():
    """The messages of the warnings logged by the package (`taptr` loggers) during a test,
    collected on the package's own logger (the CLI may stop it from propagating)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logging.getLogger("taptr").addHandler(handler)
    yield messages
    logging.getLogger("taptr").removeHandler(handler)


def test_write_h264_mp4_odd_size_is_padded_and_says_so(tmp_path, warnings_logged):
    frames = moving_square_frames(5, 37, 53)
    codec = write_video(tmp_path / "out.mp4", frames, fps=8)
    assert codec == "h264"
    video = open_video(tmp_path / "out.mp4")
    assert video.num_frames == 5 and video.size == (54, 38)  # H.264 needs even sizes
    assert abs(video.fps - 8) < 1e-6
    assert np.abs(video.read_frames()[:, :37, :53].astype(int) - frames).mean() < 10
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert warnings_logged == [
        ("out.mp4: H.264 stores only even sizes, so the 53x37 video is written as 54x38 (last "
         "column/row repeated); .webm, .avi or .gif keep the size")]


@pytest.mark.parametrize("name", ["out.webm", "out.avi", "out.gif"])
def test_other_formats_keep_an_odd_size_and_the_rate(tmp_path, warnings_logged, name):
    frames = moving_square_frames(5, 37, 53)
    write_video(tmp_path / name, frames, fps=10)  # a rate GIF's 1/100 s delays hold exactly
    video = open_video(tmp_path / name)
    assert (video.num_frames, video.size) == (5, (53, 37))
    assert abs(video.fps - 10) < 1e-3
    assert warnings_logged == []


def test_a_missing_h264_encoder_is_announced(tmp_path, warnings_logged, monkeypatch):
    import av

    real = av.codec.Codec

    def without_h264(name, mode="r"):
        if name in ("libx264", "libopenh264"):
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", without_h264)
    frames = moving_square_frames(3, 37, 53)
    assert write_video(tmp_path / "out.mp4", frames, fps=8) == "mpeg4"
    assert open_video(tmp_path / "out.mp4").size == (53, 37)  # MPEG-4 Part 2 takes odd sizes
    assert warnings_logged == [
        "out.mp4: this FFmpeg build has no H.264 encoder; written as MPEG-4 Part 2"]


@pytest.mark.parametrize("fps", [None, 0.0, float("nan")])
def test_an_unknown_frame_rate_is_announced(tmp_path, warnings_logged, fps):
    write_video(tmp_path / "out.mp4", moving_square_frames(3, 32, 48), fps=fps)
    assert open_video(tmp_path / "out.mp4").fps == pytest.approx(30.0)
    assert warnings_logged == ["out.mp4: the video has no frame rate; written at 30 frames/s"]


def test_failed_write_leaves_nothing(tmp_path):
    def broken_frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "out.mp4", broken_frames(), fps=5)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "keep.npz").write_bytes(b"old")
    with pytest.raises(ZeroDivisionError):
        with atomic_path(tmp_path / "keep.npz") as temp:
            temp.write_bytes(b"half")
            1 / 0
    assert (tmp_path / "keep.npz").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npz"]


def test_staged_folder_creates_nothing_on_failure(tmp_path):
    target = tmp_path / "a" / "b"
    with pytest.raises(ValueError):
        with staged_folder(target) as staging:
            (staging / "tracks.npz").write_bytes(b"x")
            raise ValueError
    assert list(tmp_path.iterdir()) == []
    with staged_folder(target) as staging:
        (staging / "tracks.npz").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["tracks.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


# ----------------------------------------------------------------------------- track files

def _example_tracks(num_points=3, num_frames=5):
    rng = np.random.default_rng(1)
    return dict(
        tracks=rng.uniform(0, 50, (num_points, num_frames, 2)).astype(np.float32),
        visible=rng.random((num_points, num_frames)) > 0.3,
        visibility=rng.random((num_points, num_frames)).astype(np.float32),
        queries=np.array([[0, 1, 2], [2, 3.5, 4], [4, 5, 6]], np.float32)[:num_points],
        video_size=(64, 48), fps=12.0,
    )


@pytest.mark.parametrize("extension", [".npz", ".json"])
def test_track_files_roundtrip_exactly(tmp_path, extension):
    data = _example_tracks()
    save_tracks(tmp_path / f"t{extension}", **data)
    loaded = load_tracks(tmp_path / f"t{extension}")
    for key in ("tracks", "visible", "visibility", "queries"):
        np.testing.assert_array_equal(loaded[key], data[key])
        assert loaded[key].dtype == data[key].dtype
    assert loaded["video_size"] == (64, 48) and loaded["fps"] == 12.0


def test_csv_long_form(tmp_path):
    data = _example_tracks()
    save_tracks(tmp_path / "t.csv", **data)
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "point,frame,x,y,visible,visibility"
    assert len(lines) == 1 + 3 * 5
    point, frame, x, y, visible, visibility = lines[1 + 5 + 2].split(",")  # point 1, frame 2
    assert (point, frame) == ("1", "2")
    assert abs(float(x) - data["tracks"][1, 2, 0]) < 1e-4
    assert visible == str(int(data["visible"][1, 2]))
    loaded = load_tracks(tmp_path / "t.csv")
    np.testing.assert_allclose(loaded["tracks"], data["tracks"], atol=1e-4)
    np.testing.assert_array_equal(loaded["visible"], data["visible"])
    assert loaded["queries"] is None


def test_track_file_errors(tmp_path):
    with pytest.raises(TaptrError, match=".txt"):
        save_tracks(tmp_path / "t.txt", **_example_tracks())
    bad = _example_tracks()
    bad["visible"] = bad["visible"][:, :2]
    with pytest.raises(TaptrError, match="inconsistent"):
        save_tracks(tmp_path / "t.npz", **bad)
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(TaptrError, match="not a valid track file"):
        load_tracks(tmp_path / "x.json")


# ----------------------------------------------------------------------------- queries

def test_parse_points():
    np.testing.assert_array_equal(parse_points("0,10,20; 3, 4.5,6 ;"),
                                  [[0, 10, 20], [3, 4.5, 6]])
    with pytest.raises(TaptrError, match="point 1 .*expected 3 numbers"):
        parse_points("0,1,2;3,4")
    with pytest.raises(TaptrError, match="no points"):
        parse_points(" ; ")


def test_query_text_files(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("t,x,y\n# a comment\n0,10,20\n\n5 30.5 40  # inline\n")
    np.testing.assert_array_equal(read_queries(path), [[0, 10, 20], [5, 30.5, 40]])
    path.write_text("0,10,20\n1,abc,3\n")
    with pytest.raises(TaptrError, match="q.csv line 2 .*not a number"):
        read_queries(path)
    path.write_text("0,10,20\n1,2\n")
    with pytest.raises(TaptrError, match="line 2 .*expected 3 numbers"):
        read_queries(path)
    path.write_text("# nothing\n")
    with pytest.raises(TaptrError, match="no queries"):
        read_queries(path)
    with pytest.raises(TaptrError, match="no such query file"):
        read_queries(tmp_path / "missing.csv")


def test_query_array_files(tmp_path):
    queries = np.array([[0, 1, 2], [3, 4, 5]], np.float32)
    np.save(tmp_path / "q.npy", queries)
    np.testing.assert_array_equal(read_queries(tmp_path / "q.npy"), queries)
    np.savez(tmp_path / "q.npz", queries=queries, other=np.zeros(3))
    np.testing.assert_array_equal(read_queries(tmp_path / "q.npz"), queries)
    np.save(tmp_path / "bad.npy", np.zeros((2, 2)))
    with pytest.raises(TaptrError, match=r"\[N, 3\]"):
        read_queries(tmp_path / "bad.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(TaptrError, match="cannot read"):
        read_queries(tmp_path / "junk.npy")


def test_atomic_writes_give_files_the_usual_permissions(tmp_path):
    """Every writer goes through atomic_path; its files get 0666 minus the umask, whatever the
    writer did (safetensors creates 0600 files)."""
    import os
    import stat

    from taptr.models import build_model
    from taptr.weights import save_weights

    umask = os.umask(0o022)
    try:
        path = save_weights(build_model("tiny"), tmp_path / "w.safetensors")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(umask)
