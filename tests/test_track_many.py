"""Tracking a whole dataset: `taptr track` over many inputs (a nested folder with a broken
file, globs, list files), resuming, splitting over 2 processes under torchrun, and
`Tracker.track_many`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tracking_helpers import moving_square_frames, write_clip

from taptr.cli import main
from taptr.errors import TaptrError
from taptr.io import load_tracks
from taptr.io.inputs import find_videos

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny_weights: conftest.py

REPO = Path(__file__).resolve().parents[1]
CLIPS = ["a/one.mp4", "a/two.mp4", "b/c/three.mp4", "b/four.webm", "five.mp4"]
GOOD = ["a/one", "a/two", "b/c/three", "b/four", "b/frames", "five"]  # result names
BAD = {"b/broken": "is not a video file", "empty": "is empty"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A nested folder: 5 clips (8 frames, 64x96), a folder of images (one video), a broken
    .mp4, an empty .mp4 and a text file that is not a video."""
    root = tmp_path_factory.mktemp("dataset")
    for seed, name in enumerate(CLIPS):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        codec = "libvpx-vp9" if name.endswith(".webm") else "libx264"
        write_clip(root / name, moving_square_frames(8, 64, 96, seed=seed), codec=codec,
                   pix_fmt="yuv420p" if codec != "libx264" else None)
    (root / "b" / "frames").mkdir()
    for index, frame in enumerate(moving_square_frames(8, 64, 96, seed=9)):
        Image.fromarray(frame).save(root / "b" / "frames" / f"{index:03d}.png")
    (root / "b" / "broken.mp4").write_bytes(bytes(range(256)) * 4)
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.txt").write_text("not a video\n")
    return root


def _track(capsys, *argv):
    code = main(["track", *map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _summary(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["result"]: row for row in csv.DictReader(handle)}


def _stamps(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every file of every result folder."""
    return {str(path.relative_to(out)): (path.stat().st_ino, path.stat().st_mtime_ns)
            for path in sorted(out.rglob("*")) if path.is_file() and "summary" not in path.name}


TRACK = ["--grid", 2, "--no-overlay"]


def test_a_folder_run_writes_every_good_result_and_names_the_bad_ones(dataset, tiny_weights,
                                                                      tmp_path, capsys,
                                                                      monkeypatch):
    from taptr.tracker import Tracker

    loads = []
    load = Tracker.from_pretrained.__func__
    monkeypatch.setattr(Tracker, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loads.append(a) or load(cls, *a, **k)))
    out = tmp_path / "out"
    code, stdout, stderr = _track(capsys, dataset, "--weights", tiny_weights, *TRACK,
                                  "--out", out)
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        f"taptr track: 2 of 8 videos failed (see {out / 'summary.csv'})")
    assert "tracked 6 videos (48 frames)" in stdout
    assert len(loads) == 1  # one model load for the whole run
    summary = _summary(out)
    assert sorted(summary) == sorted(GOOD + list(BAD))
    for name in GOOD:
        row = summary[name]
        assert (row["status"], row["frames"], row["points"], row["error"]) == (
            "tracked", "8", "4", ""), row
        assert sorted(p.name for p in (out / name).iterdir()) == [
            "complete.json", "tracks.csv", "tracks.npz"]
        assert load_tracks(out / name / "tracks.npz")["tracks"].shape == (4, 8, 2)
    for name, reason in BAD.items():
        assert summary[name]["status"] == "failed" and reason in summary[name]["error"]
        assert "\n" not in summary[name]["error"]
        assert not (out / name).exists()  # no half-written result
    assert summary["b/frames"]["input"] == str(dataset / "b" / "frames")  # one video
    report = json.loads((out / "summary.json").read_text())
    assert (report["videos"], report["tracked"], report["failed"], report["skipped"]) == (
        8, 6, 2, 0)
    assert "Traceback" not in stderr


def test_a_rerun_recomputes_only_deleted_or_unfinished_results(dataset, tiny_weights,
                                                               tmp_path, capsys):
    out = tmp_path / "out"
    inputs = [dataset / "a", dataset / "b" / "c" / "three.mp4", dataset / "five.mp4",
              "--weights", tiny_weights, "--out", out]
    args = [*inputs, *TRACK]
    assert _track(capsys, *args)[0] == 0
    before = _stamps(out)
    names = sorted({str(Path(key).parent) for key in before})
    assert names == ["five", "one", "three", "two"]  # each file given: its own root
    shutil.rmtree(out / "two")
    (out / "three" / "complete.json").unlink()  # a run killed before the marker
    code, stdout, _ = _track(capsys, *args)
    assert code == 0 and "tracked 2 videos" in stdout and "skipped 2 already complete" in stdout
    after = _stamps(out)
    assert set(after) == set(before)
    for key, stamp in before.items():
        if key.startswith(("one/", "five/")):
            assert after[key] == stamp, key  # untouched: same inode, same mtime
        else:
            assert after[key] != stamp, key  # written anew
    summary = _summary(out)
    assert {name: row["status"] for name, row in summary.items()} == {
        "one": "skipped", "two": "tracked", "three": "tracked", "five": "skipped"}
    assert summary["one"]["frames"] == "8"  # from the earlier run's marker
    # Other settings make other results: everything is recomputed.
    code, stdout, _ = _track(capsys, *inputs, "--grid", 3, "--no-overlay")
    assert code == 0 and "tracked 4 videos" in stdout
    assert load_tracks(out / "one" / "tracks.npz")["tracks"].shape == (9, 8, 2)


def test_inputs_from_globs_and_lists(dataset, tmp_path):
    found = find_videos(str(dataset / "**" / "*.mp4"))
    assert [v.name for v in found] == ["a/one", "a/two", "b/broken", "b/c/three", "empty",
                                       "five"]
    listing = dataset / "b" / "list.txt"
    listing.write_text("# clips\nc/three.mp4\n\nfour.webm\n../a/one.mp4\nmissing.mp4\n")
    try:
        found = find_videos(listing)
    finally:
        listing.unlink()
    assert [(v.name, v.path.exists()) for v in found] == [
        ("b/c/three", True), ("b/four", True), ("a/one", True), ("b/missing", False)]
    # Colliding names keep their extension; the output folder is not searched.
    (tmp_path / "x").mkdir()
    shutil.copy(dataset / "five.mp4", tmp_path / "x" / "clip.mp4")
    shutil.copy(dataset / "b" / "four.webm", tmp_path / "x" / "clip.webm")
    (tmp_path / "x" / "results").mkdir()
    shutil.copy(dataset / "five.mp4", tmp_path / "x" / "results" / "o.mp4")
    names = [v.name for v in find_videos(tmp_path / "x", exclude=[tmp_path / "x" / "results"])]
    assert names == ["clip.mp4", "clip.webm"]
    for spec, message in [(tmp_path / "none", "no such file or folder"),
                          (str(tmp_path / "*.avi"), "no video matches")]:
        with pytest.raises(TaptrError, match=message):
            find_videos(spec)
    (tmp_path / "void").mkdir()
    with pytest.raises(TaptrError, match="holds no videos"):
        find_videos(tmp_path / "void")


def test_usage_mistakes_stop_before_any_work(dataset, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    for argv, message in [([dataset, tmp_path / "nothing"], "no such file or folder"),
                          ([str(dataset / "*.avi")], "no video matches"),
                          ([dataset / "notes.txt"], "nor a list of videos"),
                          ([dataset, "--mask", tmp_path / "m.png", "--grid", 2],
                           "no such mask image")]:
        code, _, stderr = _track(capsys, *argv, "--weights", tiny_weights, "--out", out)
        assert code == 2 and stderr.count("\n") == 1 and message in stderr, stderr
        assert not out.exists()


def test_track_many_from_python_goes_on_after_a_bad_video(dataset, tracker):
    mask = np.zeros((32, 32), bool)  # square: the 96x64 videos refuse it
    outcomes = list(tracker.track_many(dataset / "a", grid=2, progress=False))
    assert [(o.video.name, o.ok) for o in outcomes] == [("one", True), ("two", True)]
    single = tracker.track(dataset / "a" / "two.mp4", grid=2, progress=False)
    np.testing.assert_array_equal(outcomes[1].result.tracks, single.tracks)
    bad = list(tracker.track_many([dataset / "empty.mp4", dataset / "five.mp4"], grid=2,
                                  mask=mask, progress=False))
    assert "is empty" in bad[0].error and bad[0].result is None
    assert "the mask is 32x32 but the video is 96x64" in bad[1].error


@pytest.mark.slow
def test_two_processes_under_torchrun_give_the_same_tracks_as_one(dataset, tiny_weights,
                                                                   tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    code, _, _ = _track(capsys, dataset, "--weights", tiny_weights, *TRACK, "--out", one)
    assert code == 1
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()),
               "-m", "taptr", "track", str(dataset), "--weights", tiny_weights, "--grid", "2",
               "--no-overlay", "--no-progress", "--out", str(two)]
    process = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=180)
    assert process.returncode != 0  # two inputs failed
    assert "taptr track: 2 of 8 videos failed" in process.stderr, process.stderr
    assert process.stdout.count("tracked 6 videos") == 1  # rank 0 alone reports
    assert sorted(_summary(two)) == sorted(_summary(one))
    for name, row in _summary(two).items():
        assert row["status"] == _summary(one)[name]["status"]
    for name in GOOD:
        first, second = load_tracks(one / name / "tracks.npz"), load_tracks(
            two / name / "tracks.npz")
        np.testing.assert_allclose(second["tracks"], first["tracks"], atol=1e-3, rtol=0)
        np.testing.assert_array_equal(second["visible"], first["visible"])
    assert json.loads((two / "summary.json").read_text())["processes"] == 2


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
