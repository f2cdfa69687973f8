"""`taptr eval` end to end on a tiny generated TAP-Vid pickle, and the evaluation protocol."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taptr.cli import main
from taptr.data.tapvid import write_tapvid_pickle
from taptr.evaluation import METRIC_NAMES
from taptr.evaluation.evaluate import EvalProtocol, evaluate
from taptr.evaluation.toydata import make_toy_videos

NUM_FRAMES, SIZE = 12, (64, 64)


@pytest.fixture(scope="module")
def toy_videos():
    return make_toy_videos(num_videos=2, num_frames=NUM_FRAMES, size=SIZE, num_points=8, seed=3)


@pytest.fixture(scope="module")
def toy_pickle(tmp_path_factory, toy_videos):
    path = tmp_path_factory.mktemp("data") / "toy.pkl"
    write_tapvid_pickle(path, toy_videos)
    return path


def run_cli(*argv):
    return main(["eval", "--no-progress", *map(str, argv)])


def independent_static_scores(videos, mode, scale=256.0):
    """Static tracker scored from scratch: loops over cells, no code shared with taptr."""
    scores = []
    for entry in videos.values():
        points, occluded = entry["points"].astype(np.float64) * scale, entry["occluded"]
        cells = []  # (gt visible, distance) of every scored cell; static predicts visible
        for n in range(points.shape[0]):
            visible_frames = np.flatnonzero(~occluded[n])
            if mode == "first":
                query_frames = visible_frames[:1]
            else:
                query_frames = [t for t in range(0, NUM_FRAMES, 5) if not occluded[n, t]]
            for q in query_frames:
                for t in range(NUM_FRAMES):
                    if (t > q) if mode == "first" else (t != q):
                        distance = np.hypot(*(points[n, t] - points[n, q]))
                        cells.append((not occluded[n, t], distance))
        jaccards, withins = [], []
        for delta in (1, 2, 4, 8, 16):
            visible = [d for v, d in cells if v]
            hits = sum(d < delta for d in visible)
            withins.append(hits / len(visible))
            jaccards.append(hits / (len(visible) + len(cells) - hits))
        accuracy = np.mean([v for v, _ in cells])
        scores.append((np.mean(jaccards), np.mean(withins), accuracy))
    return np.mean(scores, axis=0)


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_static_matches_an_independent_implementation(tmp_path, toy_pickle, toy_videos, mode):
    out = tmp_path / "static.json"
    assert run_cli("--data", toy_pickle, "--tracker", "static", "--mode", mode, "--json", out) == 0
    metrics = json.loads(out.read_text())["metrics"]
    aj, delta_avg, oa = independent_static_scores(toy_videos, mode)
    assert metrics["average_jaccard"] == pytest.approx(aj, abs=1e-6)
    assert metrics["average_pts_within_thresh"] == pytest.approx(delta_avg, abs=1e-6)
    assert metrics["occlusion_accuracy"] == pytest.approx(oa, abs=1e-6)


@pytest.mark.parametrize("tracker", ["static", "lk", "dis"])
def test_cli_end_to_end_with_each_baseline(tmp_path, toy_pickle, capsys, tracker):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    code = run_cli("--data", toy_pickle, "--tracker", tracker, "--mode", "strided",
                   "--json", out_json, "--per-video", out_csv)
    assert code == 0
    printed = capsys.readouterr().out
    assert f"tracker={tracker}" in printed and "AJ" in printed and "d<16" in printed
    results = json.loads(out_json.read_text())
    protocol = results["protocol"]
    assert protocol["query_mode"] == "strided" and protocol["resolution"] == "256"
    assert protocol["tracker"] == tracker and protocol["scale"] == 256.0
    assert results["num_videos"] == 2 and len(results["per_video"]) == 2
    assert set(METRIC_NAMES) <= set(results["metrics"])
    per_video_aj = [video["average_jaccard"] for video in results["per_video"]]
    assert results["metrics"]["average_jaccard"] == pytest.approx(np.mean(per_video_aj))
    rows = list(csv.DictReader(out_csv.open()))
    assert [row["name"] for row in rows] == ["toy_000", "toy_001"]
    assert float(rows[0]["average_jaccard"]) == pytest.approx(per_video_aj[0])
    if tracker != "static":  # flow trackers must clear the floor on a moving texture
        static = evaluate(_static(), toy_pickle, EvalProtocol("strided"), progress=False)
        assert results["metrics"]["average_jaccard"] > static["metrics"]["average_jaccard"] + 0.2


def _static():
    from taptr.evaluation.baselines import make_baseline

    return make_baseline("static")


class OracleTracker:
    """Returns the ground truth in the tracker's pixels, computed with its own formulas."""

    supports_query_padding = True  # a `PointTracker`

    def __init__(self, videos, scale_255):
        self.videos, self.scale_255 = list(videos.values()), scale_255
        self.calls, self.pad_queries_seen = 0, []

    def track(self, video, queries, pad_queries=0, progress=True):
        entry = self.videos[self.calls]
        self.calls += 1
        self.pad_queries_seen.append(pad_queries)
        height, width = video.shape[1:3]
        u = entry["points"].astype(np.float64)
        if self.scale_255:
            pixels = u * [width - 1, height - 1]
        else:
            pixels = u * [width, height] - 0.5
        # Match each query to its track by position at its query frame.
        frames = queries[:, 0].astype(int)
        track_of_query = [
            int(np.argmin(np.linalg.norm(pixels[:, t] - q[1:], axis=-1)))
            for t, q in zip(frames, queries)
        ]
        tracks = pixels[track_of_query]
        return type("Result", (), {"tracks": tracks, "visible": ~entry["occluded"][track_of_query]})


@pytest.fixture(scope="module")
def non_square(tmp_path_factory):
    """Toy videos of 80x48 (W x H) and their pickle."""
    videos = make_toy_videos(num_videos=2, num_frames=NUM_FRAMES, size=(80, 48), seed=4)
    path = tmp_path_factory.mktemp("data") / "non_square.pkl"
    write_tapvid_pickle(path, videos)
    return videos, path


@pytest.mark.parametrize("resolution", ["256", "native"])
@pytest.mark.parametrize("scale_255", [False, True])
def test_perfect_tracker_scores_one_in_every_protocol(non_square, resolution, scale_255):
    videos, path = non_square
    oracle = OracleTracker(videos, scale_255)
    protocol = EvalProtocol("strided", resolution=resolution, scale_255=scale_255, pad_queries=800)
    results = evaluate(oracle, path, protocol, progress=False)
    for name in METRIC_NAMES:
        assert results["metrics"][name] == pytest.approx(1.0, abs=1e-9), name
    assert oracle.pad_queries_seen == [800, 800]
    assert results["protocol"]["pad_queries_applied"] is True
    assert results["protocol"]["scale"] == (255.0 if scale_255 else 256.0)


def test_protocol_coordinate_conversions_by_hand():
    u = np.array([[0.0, 1.0], [0.5, 0.25]])
    tapnet = EvalProtocol()
    # x = u * W - 0.5 (pixel centres at integers), metric = (x + 0.5) * 256 / W.
    np.testing.assert_allclose(tapnet.queries_to_pixels(u, (256, 256)),
                               [[-0.5, 255.5], [127.5, 63.5]])
    np.testing.assert_allclose(tapnet.queries_to_pixels(u, (80, 48)),
                               [[-0.5, 47.5], [39.5, 11.5]])
    np.testing.assert_allclose(tapnet.predictions_to_metric(np.array([[-0.5, 47.5], [39.5, 11.5]]),
                                                            (80, 48)), [[0, 256], [128, 64]])
    official = EvalProtocol(scale_255=True)
    # x = u * (W - 1), metric = x * 255 / (W - 1).
    np.testing.assert_allclose(official.queries_to_pixels(u, (80, 48)), [[0, 47], [39.5, 11.75]])
    np.testing.assert_allclose(official.predictions_to_metric(np.array([[79.0, 47.0]]), (80, 48)),
                               [[255, 255]])


def test_static_is_the_same_at_native_and_256_and_ignores_padding(toy_pickle):
    at_256 = evaluate(_static(), toy_pickle, EvalProtocol("first", pad_queries=800),
                      progress=False)
    native = evaluate(_static(), toy_pickle, EvalProtocol("first", resolution="native"),
                      progress=False)
    assert at_256["protocol"]["pad_queries_applied"] is False
    for name in METRIC_NAMES:
        assert native["metrics"][name] == pytest.approx(at_256["metrics"][name], abs=1e-12)


def test_videos_without_queries_are_skipped_and_listed(tmp_path, toy_videos, capsys):
    hidden = {key: value.copy() for key, value in toy_videos["toy_000"].items()}
    hidden["occluded"] = np.ones_like(hidden["occluded"])
    path = tmp_path / "hidden.pkl"
    write_tapvid_pickle(path, {"hidden": hidden, "toy_001": toy_videos["toy_001"]})
    out = tmp_path / "r.json"
    assert run_cli("--data", path, "--tracker", "static", "--json", out) == 0
    results = json.loads(out.read_text())
    assert results["skipped_videos"] == ["hidden"] and results["num_videos"] == 1
    assert "skipped 1 video without any query" in capsys.readouterr().out


def test_scale_255_and_limit(tmp_path, toy_pickle, toy_videos):
    out = tmp_path / "r.json"
    assert run_cli("--data", toy_pickle, "--tracker", "static", "--scale-255", "--limit", "1",
                   "--json", out) == 0
    results = json.loads(out.read_text())
    assert results["num_videos"] == 1 and results["protocol"]["scale_255"] is True
    first_video = {"toy_000": toy_videos["toy_000"]}
    aj, _, _ = independent_static_scores(first_video, "first", scale=255.0)
    assert results["metrics"]["average_jaccard"] == pytest.approx(aj, abs=1e-6)


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, p: ["--data", d / "missing.pkl", "--tracker", "lk"], "no such file"),
        (lambda d, p: ["--data", d / "junk.pkl", "--tracker", "lk"], "not a TAP-Vid pickle"),
        (lambda d, p: ["--data", p, "--tracker", "raft"], "unknown tracker"),
        (lambda d, p: ["--data", p, "--tracker", "lk", "--json", d / "junk.pkl" / "r.json"],
         "is a file"),
        (lambda d, p: ["--data", p, "--tracker", "lk", "--per-video", d],
         "it is a folder"),
        (lambda d, p: ["--data", p, "--tracker", "lk", "--limit", "0"], "--limit"),
        (lambda d, p: ["--data", p, "--tracker", "lk", "--weights", "x"], "--weights"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, toy_pickle, capsys, make_args, message):
    (tmp_path / "junk.pkl").write_bytes(b"\x00not a pickle at all")
    before = set(tmp_path.iterdir())
    assert run_cli(*make_args(tmp_path, toy_pickle)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("taptr eval: error:") and message in err
    assert "\n" not in err
    assert set(tmp_path.iterdir()) == before  # nothing half-written left behind


def test_taptr_tracker_without_its_module_is_a_clean_error(toy_pickle, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "taptr.tracker", None)  # makes the import fail
    assert run_cli("--data", toy_pickle, "--tracker", "taptr") == 2
    assert "taptr.tracker" in capsys.readouterr().err


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_style_split_gathers_every_video(tmp_path, toy_pickle):
    single = evaluate(_static(), toy_pickle, EvalProtocol("strided"), progress=False)
    port = str(_free_port())
    processes = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1")
        command = [sys.executable, "-m", "taptr", "eval", "--no-progress", "--data",
                   str(toy_pickle), "--tracker", "static", "--mode", "strided",
                   "--json", str(tmp_path / f"rank{rank}.json")]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert "AJ" in outputs[0][0] and outputs[1][0] == ""  # only rank 0 prints
    assert not Path(tmp_path / "rank1.json").exists()  # only rank 0 writes
    results = json.loads((tmp_path / "rank0.json").read_text())
    assert results["protocol"]["world_size"] == 2
    assert [v["name"] for v in results["per_video"]] == ["toy_000", "toy_001"]
    for name in METRIC_NAMES:
        assert results["metrics"][name] == pytest.approx(single["metrics"][name], abs=1e-12)


def test_taptr_tracker_runs_through_the_harness(tmp_path, toy_pickle, capsys):
    """The model tracker (tiny preset, random weights) plugs into the loop, padding included."""
    pytest.importorskip("taptr.tracker")
    torch = pytest.importorskip("torch")
    from taptr import get_preset
    from taptr.models import build_model
    from taptr.weights import save_weights

    torch.manual_seed(0)
    save_weights(build_model(get_preset("tiny")), tmp_path / "tiny.safetensors")
    out = tmp_path / "r.json"
    assert run_cli("--data", toy_pickle, "--tracker", "taptr", "--weights",
                   tmp_path / "tiny.safetensors", "--device", "cpu", "--pad-queries", "40",
                   "--limit", "1", "--json", out) == 0
    results = json.loads(out.read_text())
    assert results["protocol"]["pad_queries_applied"] is True
    assert results["num_videos"] == 1
    assert 0.0 <= results["metrics"]["occlusion_accuracy"] <= 1.0


def test_the_harness_takes_point_trackers_only(toy_pickle):
    """The contract is `PointTracker` (supports_query_padding, track); an object with only a
    `track` method is refused before any video is read, naming the protocol."""
    from taptr.evaluation.trackers import PointTracker
    from tracking_helpers import tiny_tracker

    class TrackOnly:
        def track(self, video, queries):
            raise AssertionError("called")

    with pytest.raises(TypeError, match="TrackOnly is not a PointTracker"):
        evaluate(TrackOnly(), toy_pickle, EvalProtocol(), progress=False)
    assert all(isinstance(make(), PointTracker) for make in (_static, lambda: OracleTracker({}, False)))
    assert isinstance(tiny_tracker(), PointTracker)


def test_result_files_go_into_missing_folders(tmp_path, toy_pickle):
    """Output locations are created (and were checked before the evaluation)."""
    assert run_cli("--data", toy_pickle, "--tracker", "static", "--json",
                   tmp_path / "new" / "r.json", "--per-video", tmp_path / "new2" / "v.csv") == 0
    assert json.loads((tmp_path / "new" / "r.json").read_text())["num_videos"] == 2
    assert (tmp_path / "new2" / "v.csv").read_text().startswith("name,")
