"""`taptr track` end to end, and its refusals of bad input (exit 2, one line, no output)."""

from __future__ import annotations

import numpy as np
import pytest

from taptr.cli import main
from taptr.io import load_tracks, open_video
from tracking_helpers import SHARED_VIDEOS, moving_square_frames, write_clip

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny_weights: conftest.py


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    return write_clip(folder / "clip.mp4", moving_square_frames(10, 36, 50))


def _track(capsys, *argv):
    code = main(["track", *map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_track_writes_tracks_and_overlay(clip, tiny_weights, tmp_path, capsys):
    out = tmp_path / "result"
    code, stdout, stderr = _track(capsys, clip, "--weights", tiny_weights, "--points",
                                  "0,10,12;6,40.5,20", "--out", out, "--json", "--trail", 4,
                                  "--threads", 1)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["overlay.mp4", "tracks.csv", "tracks.json",
                                                     "tracks.npz"]
    tracks = load_tracks(out / "tracks.npz")
    assert tracks["tracks"].shape == (2, 10, 2) and tracks["video_size"] == (50, 36)
    np.testing.assert_array_equal(tracks["tracks"][1, 6], [40.5, 20])
    assert len((out / "tracks.csv").read_text().splitlines()) == 1 + 2 * 10
    overlay = open_video(out / "overlay.mp4")
    assert overlay.num_frames == 10 and overlay.size == (50, 36)
    assert "2 points through 10 frames (50x36)" in stdout and "frames/s" in stdout
    assert str(out / "overlay.mp4") in stdout


def test_default_output_folder_and_grid(clip, tiny_weights, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = _track(capsys, clip, "--weights", tiny_weights, "--grid", 3,
                                  "--grid-frame", 2, "--no-backward", "--no-overlay")
    assert code == 0, stderr
    out = tmp_path / "taptr_out" / "clip"
    assert sorted(p.name for p in out.iterdir()) == ["tracks.csv", "tracks.npz"]
    tracks = load_tracks(out / "tracks.npz")
    assert tracks["tracks"].shape == (9, 10, 2) and (tracks["queries"][:, 0] == 2).all()
    assert not tracks["visible"][:, :2].any()


def test_query_file_and_mask(clip, tiny_weights, tmp_path, capsys):
    queries = tmp_path / "q.csv"
    queries.write_text("t,x,y\n0,5,5\n3,20,30\n")
    code, _, stderr = _track(capsys, clip, "--weights", tiny_weights, "--queries", queries,
                             "--out", tmp_path / "a", "--no-overlay")
    assert code == 0, stderr
    assert load_tracks(tmp_path / "a" / "tracks.npz")["tracks"].shape == (2, 10, 2)
    from PIL import Image

    mask = np.zeros((36, 50), np.uint8)
    mask[18:] = 1
    Image.fromarray(mask * 255).save(tmp_path / "mask.png")
    code, _, stderr = _track(capsys, clip, "--weights", tiny_weights, "--grid", 4, "--mask",
                             tmp_path / "mask.png", "--out", tmp_path / "b", "--no-overlay")
    assert code == 0, stderr
    assert (load_tracks(tmp_path / "b" / "tracks.npz")["queries"][:, 2] > 18).all()


@pytest.mark.skipif(not (SHARED_VIDEOS / "apple.mp4").exists(), reason="shared videos absent")
def test_shared_video(tiny_weights, tmp_path, capsys):
    code, stdout, stderr = _track(capsys, SHARED_VIDEOS / "apple.mp4", "--weights", tiny_weights,
                                  "--points", "0,640,360;20,100,600", "--out", tmp_path)
    assert code == 0, stderr
    assert "2 points through 50 frames (1296x720)" in stdout
    assert open_video(tmp_path / "overlay.mp4").num_frames == 50


def _refused(capsys, argv, message, out):
    code, stdout, stderr = _track(capsys, *argv, "--out", out)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("taptr track: error:"), stderr
    assert message in lines[0], lines[0]
    assert not out.exists()


def test_bad_inputs_are_refused_cleanly(clip, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 20)
    noframes = tmp_path / "noframes.mp4"
    import av

    with av.open(str(noframes), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    bad_queries = tmp_path / "bad.csv"
    bad_queries.write_text("0,1,2\n1,2\n")
    use = ["--weights", tiny_weights]
    cases = [
        ([tmp_path / "missing.mp4", *use], "no such file"),
        ([text, *use], "not a video file"),
        ([noframes, *use], "has no frames"),
        ([clip, *use, "--points", "0,10,10;0,60,10;2,5,40"],
         "2 queries are outside the 50x36 frame (x in -0.5..49.5, y in -0.5..35.5): point 1"),
        ([clip, *use, "--points", "10,1,1"], "frame index outside 0..9"),
        ([clip, *use, "--points", "0,nan,1"], "NaN"),
        ([clip, *use, "--queries", bad_queries], "bad.csv line 2"),
        ([clip, *use, "--queries", tmp_path / "none.csv"], "no such query file"),
        ([clip, *use, "--grid", 3, "--grid-frame", 12], "grid frame 12"),
        ([clip, *use, "--mask", tmp_path / "m.png"], "--grid"),
        ([clip, "--weights", tmp_path / "nothing.safetensors"], "weights not found"),
        ([clip, *use, "--device", "toaster"], "unknown device"),
        ([clip, *use, "--threads", 0], "--threads must be at least 1"),
    ]
    for argv, message in cases:
        _refused(capsys, argv, message, out)


def test_unwritable_output_folder(clip, tiny_weights, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused(capsys, [clip, "--weights", tiny_weights], "is a file", blocker / "sub")
    assert blocker.read_text() == "x"
    code, _, stderr = _track(capsys, clip, "--weights", tiny_weights, "--out", blocker)
    assert code == 2 and "not a folder" in stderr


@pytest.mark.parametrize("points", ["-1,5,5", "-0.5,5,5", "0,-3,5"])
def test_values_with_a_minus_sign_reach_our_validation(clip, tiny_weights, tmp_path, capsys,
                                                      points):
    code, stdout, stderr = _track(capsys, clip, "--weights", tiny_weights, "--points", points,
                                  "--out", tmp_path / "neg")
    assert code == 2 and stderr.startswith("taptr track: error:") and stderr.count("\n") == 1
    assert "expected one argument" not in stderr
    assert not (tmp_path / "neg").exists()


def test_grid_and_points_together(clip, tiny_weights, tmp_path, capsys):
    out = tmp_path / "both"
    code, stdout, stderr = _track(capsys, clip, "--weights", tiny_weights, "--points", "0,10,12",
                                  "--grid", 2, "--out", out, "--no-overlay")
    assert code == 0, stderr
    tracks = load_tracks(out / "tracks.npz")
    assert tracks["tracks"].shape[0] == 1 + 4
    np.testing.assert_array_equal(tracks["tracks"][0, 0], [10, 12])


def test_a_corrupt_file_gets_our_line_only(tmp_path, tiny_weights, capfd):
    """FFmpeg's own log ('moov atom not found') must not precede our error (fd-level check)."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(range(256)) * 8)
    code = main(["track", str(bad), "--weights", tiny_weights, "--out", str(tmp_path / "o")])
    captured = capfd.readouterr()
    assert code == 2
    assert captured.err.strip().splitlines() == [
        f"taptr track: error: {str(bad)!r} is not a video file, or a format this install "
        "cannot read"]


def test_one_point_one_frame_and_an_odd_size_are_reported_as_they_are(tmp_path, tiny_weights,
                                                                      capsys):
    """The summary says "1 point", "1 frame"; the overlay of a 15x17 video is 16x18 (H.264)
    and the command says so on one line."""
    video = write_clip(tmp_path / "odd.mp4", moving_square_frames(1, 17, 15))
    out = tmp_path / "out"
    code, stdout, stderr = _track(capsys, video, "--weights", tiny_weights, "--points", "0,7,8",
                                  "--out", out)
    assert code == 0, stderr
    assert "tracked 1 point through 1 frame (15x17)" in stdout
    notice = ("overlay.mp4: H.264 stores only even sizes, so the 15x17 video is written as "
              "16x18 (last column/row repeated); .webm, .avi or .gif keep the size")
    assert len(stderr.splitlines()) == 1 and notice in stderr, stderr
    assert open_video(out / "overlay.mp4").size == (16, 18)


def test_track_cli_turns_each_addition_off(tmp_path, monkeypatch):
    """`taptr track --help` offers a flag per addition; the flags reach the tracker's options,
    and a bad --option is a one-line error before any work."""
    from taptr.cli import main
    from taptr.cli.tracking_options import add_arguments, option_changes
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--no-correlation", "--no-motion-correction",
                              "--option", "template_update=0.5", "--option", "kernels=reference"])
    assert option_changes(args) == {"correlation": False, "motion_correction_px": 0.0,
                                    "template_update": 0.5, "kernels": "reference"}
    assert option_changes(parser.parse_args([])) is None
    assert main(["track", "clip.mp4", "--option", "speed=11"]) == 2
