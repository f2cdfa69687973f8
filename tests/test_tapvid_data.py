"""TAP-Vid pickle readers/writer and tapnet's query sampling."""

import os
import pickle

import numpy as np
import pytest

from taptr.data.tapvid import TapVidSource, decode_entry, read_tapvid, write_tapvid_pickle
from taptr.errors import TaptrError
from taptr.evaluation.datasets import (
    resize_video,
    sample_queries_first,
    sample_queries_strided,
)


def random_videos(count=2, frames=5, height=24, width=32, points=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        f"clip{i}": {
            "video": rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8),
            "points": rng.random((points, frames, 2)).astype(np.float32),
            "occluded": rng.random((points, frames)) < 0.3,
        }
        for i in range(count)
    }


def assert_same_videos(read, written, exact_frames=True):
    assert len(read) == len(written)
    for video, original in zip(read, written.values()):
        assert video.video.dtype == np.uint8
        assert video.video.shape == original["video"].shape
        if exact_frames:
            np.testing.assert_array_equal(video.video, original["video"])
        else:  # JPEG: lossy but close
            difference = np.abs(video.video.astype(int) - original["video"].astype(int))
            assert difference.mean() < 40
        np.testing.assert_array_equal(video.points, original["points"])
        np.testing.assert_array_equal(video.occluded, original["occluded"])


def test_davis_dict_round_trip(tmp_path):
    videos = random_videos()
    path = tmp_path / "tapvid_davis.pkl"
    write_tapvid_pickle(path, videos)
    with open(path, "rb") as handle:
        raw = pickle.load(handle)
    assert isinstance(raw, dict) and set(raw) == set(videos)
    assert raw["clip0"]["points"].dtype == np.float32 and raw["clip0"]["occluded"].dtype == bool
    read = list(read_tapvid(path))
    assert [video.name for video in read] == ["clip0", "clip1"]
    assert_same_videos(read, videos)
    assert TapVidSource(path).describe() == "dict pickle, array frames"


def test_rgb_stacking_list_round_trip(tmp_path):
    videos = random_videos(count=3)
    path = tmp_path / "tapvid_rgb_stacking.pkl"
    write_tapvid_pickle(path, videos, layout="list")
    with open(path, "rb") as handle:
        assert isinstance(pickle.load(handle), list)
    read = list(read_tapvid(path))
    assert [video.name for video in read] == [
        "tapvid_rgb_stacking_0000", "tapvid_rgb_stacking_0001", "tapvid_rgb_stacking_0002"
    ]
    assert_same_videos(read, videos)
    assert TapVidSource(path).known_length == 3


def test_kinetics_directory_of_jpeg_pickles(tmp_path):
    videos = random_videos(count=3, seed=1)
    # Smooth frames so JPEG stays close to the original.
    for entry in videos.values():
        entry["video"] = np.repeat(np.repeat(entry["video"][:, :3, :4], 8, 1), 8, 2)
    names = list(videos)
    write_tapvid_pickle(tmp_path / "0001_of_0002.pkl", {n: videos[n] for n in names[2:]},
                        layout="list", jpeg_quality=95)
    write_tapvid_pickle(tmp_path / "0000_of_0002.pkl", {n: videos[n] for n in names[:2]},
                        layout="list", jpeg_quality=95)
    with open(tmp_path / "0000_of_0002.pkl", "rb") as handle:
        frames = pickle.load(handle)[0]["video"]
    assert isinstance(frames[0], bytes) and frames[0][:2] == b"\xff\xd8"  # JPEG bytes
    source = TapVidSource(tmp_path)
    assert source.known_length is None
    assert source.describe() == "list 2 pickles, jpeg frames"
    read = list(read_tapvid(tmp_path))
    assert [video.name for video in read] == ["0000_of_0002_0000", "0000_of_0002_0001",
                                             "0001_of_0002_0000"]
    assert_same_videos(read, videos, exact_frames=False)


def test_robotap_directory_of_dict_pickles(tmp_path):
    videos = random_videos(count=4, seed=2)
    names = list(videos)
    write_tapvid_pickle(tmp_path / "robotap_split0.pkl", {n: videos[n] for n in names[:2]})
    write_tapvid_pickle(tmp_path / "robotap_split1.pkl", {n: videos[n] for n in names[2:]})
    (tmp_path / "README.txt").write_text("not a pickle")
    read = list(read_tapvid(tmp_path))
    assert [video.name for video in read] == names
    assert_same_videos(read, videos)


def test_reads_pickles_written_by_plain_pickle_with_float64_points(tmp_path):
    videos = random_videos(count=1)
    videos["clip0"]["points"] = videos["clip0"]["points"].astype(np.float64)
    with open(tmp_path / "plain.pkl", "wb") as handle:
        pickle.dump(videos, handle, protocol=5)
    (video,) = read_tapvid(tmp_path / "plain.pkl")
    assert video.points.dtype == np.float64
    np.testing.assert_array_equal(video.points, videos["clip0"]["points"])


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo exploited",))


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"this is not a pickle", "not a TAP-Vid pickle"),
        ({"a": 1}, "not a TAP-Vid pickle"),
        ([], "not a TAP-Vid pickle"),
        ({"clip": {"video": Exploit(), "points": 0, "occluded": 0}}, "refusing to load"),
    ],
)
def test_bad_pickles_raise_one_line_errors(tmp_path, payload, message):
    path = tmp_path / "bad.pkl"
    path.write_bytes(payload if isinstance(payload, bytes) else pickle.dumps(payload))
    with pytest.raises(TaptrError, match=message) as error:
        list(read_tapvid(path))
    assert "\n" not in str(error.value)


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(TaptrError, match="no such file"):
        TapVidSource(tmp_path / "missing.pkl")
    with pytest.raises(TaptrError, match="holds no .pkl"):
        TapVidSource(tmp_path)


def test_csv_and_mp4_annotations(tmp_path):
    from taptr.io import write_video

    rng = np.random.default_rng(3)
    frames = np.repeat(np.repeat(rng.integers(0, 256, (9, 4, 6, 3), dtype=np.uint8), 8, 1), 8, 2)
    write_video(tmp_path / "robot.mp4", frames, fps=10)
    points = rng.random((2, 10, 2)).astype(np.float32)  # one frame longer than the video
    occluded = rng.random((2, 10)) < 0.5
    with open(tmp_path / "robotap.csv", "w") as handle:
        for n in range(2):
            cells = [f"{x:.6f},{y:.6f},{int(o)}" for (x, y), o in zip(points[n], occluded[n])]
            handle.write("robot," + ",".join(cells) + "\n")
    source = TapVidSource(tmp_path)  # a directory without pickles: the CSV is found
    assert source.describe().startswith("csv")
    (video,) = read_tapvid(tmp_path / "robotap.csv")
    assert video.name == "robot" and video.video.shape == (9, 32, 48, 3)
    np.testing.assert_allclose(video.points, points[:, :9], atol=1e-6)  # cut to the video
    np.testing.assert_array_equal(video.occluded, occluded[:, :9])


def test_inconsistent_entry_shapes_are_rejected():
    entry = random_videos(count=1)["clip0"]
    with pytest.raises(TaptrError, match="'points' must be"):
        decode_entry("clip0", {**entry, "points": entry["points"][:, :-1]})
    with pytest.raises(TaptrError, match="'occluded' must be"):
        decode_entry("clip0", {**entry, "occluded": entry["occluded"][:-1]})
    with pytest.raises(TaptrError, match="'video' must be"):
        decode_entry("clip0", {**entry, "video": entry["video"].astype(np.float32)})


def test_writer_refuses_bad_input_and_leaves_no_file(tmp_path):
    entry = random_videos(count=1)["clip0"]
    path = tmp_path / "out.pkl"
    with pytest.raises(TaptrError):
        write_tapvid_pickle(path, {"clip0": {**entry, "points": entry["points"][:, :2]}})
    with pytest.raises(TaptrError, match="does not exist"):
        write_tapvid_pickle(tmp_path / "nowhere" / "out.pkl", {"clip0": entry})
    assert list(tmp_path.iterdir()) == []


# Query sampling: tracks in pixel units, hand-built.
# track 0: visible on every frame; track 1: hidden on frames 0-5; track 2: never visible;
# track 3: visible on frames 0-4 only.
OCCLUDED = np.zeros((4, 12), dtype=bool)
OCCLUDED[1, :6] = True
OCCLUDED[2, :] = True
OCCLUDED[3, 5:] = True
POINTS = np.stack(
    [np.stack([np.arange(12) + 10.0 * n, np.arange(12) * 2.0 + n], axis=-1) for n in range(4)]
)


def test_sample_queries_first():
    queries = sample_queries_first(OCCLUDED, POINTS)
    np.testing.assert_array_equal(queries.track_index, [0, 1, 3])
    np.testing.assert_array_equal(queries.query_frames, [0, 6, 0])
    # (t, y, x) taken from the track at its first visible frame.
    np.testing.assert_array_equal(
        queries.query_points, [[0, 0.0, 0.0], [6, 13.0, 16.0], [0, 3.0, 30.0]]
    )
    np.testing.assert_array_equal(queries.target_points, POINTS[[0, 1, 3]])
    np.testing.assert_array_equal(queries.occluded, OCCLUDED[[0, 1, 3]])


def test_sample_queries_strided():
    queries = sample_queries_strided(OCCLUDED, POINTS)
    # Frames 0, 5, 10; ordered by query frame then track, as tapnet.
    np.testing.assert_array_equal(queries.query_frames, [0, 0, 5, 10, 10])
    np.testing.assert_array_equal(queries.track_index, [0, 3, 0, 0, 1])
    np.testing.assert_array_equal(queries.query_points[3], [10, 20.0, 10.0])
    np.testing.assert_array_equal(queries.query_points[4], [10, 21.0, 20.0])
    np.testing.assert_array_equal(queries.target_points[4], POINTS[1])
    assert queries.query_xy.tolist()[1] == [30.0, 3.0]


def test_resize_video_uses_lanczos_and_skips_same_size():
    video = np.random.default_rng(0).integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    assert resize_video(video, (30, 20)) is video
    resized = resize_video(video, (256, 256))
    assert resized.shape == (2, 256, 256, 3) and resized.dtype == np.uint8
    flat = np.full((1, 20, 30, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(resize_video(flat, (256, 256)), 77)
