"""Tracker: preprocessing, coordinates through resizing, both directions, chunking, queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taptr.coords import model_to_pixel, pixel_to_input, pixel_to_model
from taptr.errors import TaptrError
from taptr.preprocess import normalize, resize_frames
from taptr.tracker import Tracker
from tracking_helpers import moving_square_frames, tiny_model, write_clip

pytestmark = pytest.mark.usefixtures("one_thread")  # tracker, tiny_weights: conftest.py


SIZES = [(37, 53), (40, 120), (160, 90), (64, 96), (31, 31)]  # (H, W): odd, wide, portrait, ...


# ----------------------------------------------------------------------------- preprocessing

def test_normalize_layouts_and_values():
    frames = np.full((2, 4, 5, 3), 255, np.uint8)
    out = normalize(frames)
    assert out.shape == (2, 3, 4, 5) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0, :, 0, 0], [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                 (1 - 0.406) / 0.225], rtol=1e-6)
    channels_first = torch.ones(2, 3, 4, 5)
    torch.testing.assert_close(normalize(channels_first), out)


def _blob(height, width, x, y, sigma):
    rows, columns = np.mgrid[0:height, 0:width]
    return np.exp(-((columns - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))


def _centroid(image):
    rows, columns = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([(image * columns).sum(), (image * rows).sum()]) / image.sum()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("input_size", [(64, 96), (48, 48)])
def test_resize_moves_points_as_coords_say(size, input_size):
    height, width = size
    x, y = 0.43 * width + 0.3, 0.61 * height - 0.2
    sigma = 0.12 * min(height, width)
    image = torch.from_numpy(_blob(height, width, x, y, sigma)).float()
    image = image[None, None].repeat(1, 3, 1, 1)
    resized = resize_frames(image, input_size)[0, 0].numpy()
    expected = pixel_to_input(np.array([x, y]), (width, height), input_size[::-1])
    np.testing.assert_allclose(_centroid(resized), expected, atol=0.05)


@pytest.mark.parametrize("size", SIZES)
def test_pixel_model_round_trip(size):
    height, width = size
    points = np.array([[-0.5, -0.5], [width - 0.5, height - 0.5], [3.25, 7.75]])
    model = pixel_to_model(points, (width, height), (96, 64))
    np.testing.assert_allclose(model_to_pixel(model, (width, height), (96, 64)), points,
                               atol=1e-9)


def test_uint8_resize_matches_float_resize():
    frames = torch.from_numpy(moving_square_frames(2, 37, 53)).permute(0, 3, 1, 2)
    small = resize_frames(frames, (64, 96))
    assert small.dtype == torch.uint8 and small.shape == (2, 3, 64, 96)
    reference = resize_frames(frames.float(), (64, 96))
    assert (small.float() - reference).abs().max() <= 1.0


# ----------------------------------------------------------------------------- tracking

@pytest.fixture(scope="module")
def clip():
    return moving_square_frames(14, 37, 53)  # odd, non-square


QUERIES = np.array([[0, 10, 12], [9, 30.5, 20.25], [4, 52.5, 36.5], [13, 0, 0]], np.float32)


def test_track_shapes_and_query_frame_semantics(tracker, clip):
    result = tracker.track(clip, queries=QUERIES, progress=False)
    assert result.tracks.shape == (4, 14, 2) and result.tracks.dtype == np.float32
    assert result.visible.shape == (4, 14) and result.visible.dtype == bool
    assert result.visibility.dtype == np.float32 and result.video_size == (53, 37)
    points = np.arange(4)
    frames = QUERIES[:, 0].astype(int)
    np.testing.assert_array_equal(result.tracks[points, frames], QUERIES[:, 1:])
    assert result.visible[points, frames].all()
    assert np.isfinite(result.tracks).all()
    # backward: frames before the query frame were tracked, not just copied
    assert not np.allclose(result.tracks[1, :9], QUERIES[1, 1:])


def test_forward_only_leaves_earlier_frames_at_the_query(tracker, clip):
    result = tracker.track(clip, queries=QUERIES, backward=False, progress=False)
    for point, (t, x, y) in enumerate(QUERIES):
        t = int(t)
        np.testing.assert_array_equal(result.tracks[point, :t], np.tile([x, y], (t, 1)))
        assert not result.visible[point, :t].any() and (result.visibility[point, :t] == 0).all()
    assert not result.backward


def test_backward_pass_is_the_time_reversed_video(tracker, clip):
    result = tracker.track(clip, queries=QUERIES[:2], progress=False)
    # The backward pass runs frames 9..0 for the point queried at frame 9.
    reversed_result = tracker.track(clip[9::-1].copy(), queries=[[0, 30.5, 20.25]],
                                    backward=False, progress=False)
    np.testing.assert_allclose(result.tracks[1, :9], reversed_result.tracks[0, 9:0:-1], atol=1e-4)
    np.testing.assert_allclose(result.visibility[1, :9], reversed_result.visibility[0, 9:0:-1],
                               atol=1e-5)


def test_file_array_and_tensor_inputs_agree(tracker, clip, tmp_path):
    path = write_clip(tmp_path / "clip.mp4", clip)
    from taptr.io import open_video

    decoded = open_video(path).read_frames()
    from_file = tracker.track(str(path), queries=QUERIES, progress=False)
    from_array = tracker.track(decoded, queries=QUERIES, progress=False)
    tensor = torch.from_numpy(decoded).permute(0, 3, 1, 2).float() / 255.0
    from_tensor = tracker.track(tensor, queries=torch.from_numpy(QUERIES), progress=False)
    np.testing.assert_array_equal(from_file.tracks, from_array.tracks)
    np.testing.assert_allclose(from_tensor.tracks, from_array.tracks, atol=1e-4)
    assert from_file.fps == 10.0 and from_array.fps is None


def test_chunked_points_equal_unchunked(tracker, clip):
    queries = np.concatenate([QUERIES, [[2, 5, 5], [2, 40, 30], [0, 25, 25], [7, 12, 33]]])
    whole = tracker.track(clip, queries=queries, progress=False)
    chunked = tracker.track(clip, queries=queries, point_chunk=2, progress=False)
    np.testing.assert_allclose(chunked.tracks, whole.tracks, atol=1e-4)
    np.testing.assert_allclose(chunked.visibility, whole.visibility, atol=1e-5)


def _without_point_attention():
    """A tracker whose decoder's point self-attention adds nothing (its output projection is
    zero): no point can influence another one."""
    import copy

    model = copy.deepcopy(tiny_model())
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.startswith("decoder.") and name.endswith(".self_attn"):
                module.out_proj.weight.zero_()
                module.out_proj.bias.zero_()
    return Tracker(model, device="cpu")


def test_pad_queries_do_what_the_docs_say(tracker, clip):
    """docs/tracking.md ("Many points") and `Tracker.track`: each pass is padded to
    `pad_queries` points with seeded static points, which are not returned; they change
    the real points' results only through the point self-attention."""
    plain = tracker.track(clip, queries=QUERIES, progress=False)
    padded = tracker.track(clip, queries=QUERIES, pad_queries=20, progress=False)
    assert padded.tracks.shape == plain.tracks.shape == (4, 14, 2)  # padding not returned
    np.testing.assert_array_equal(padded.queries, plain.queries)
    again = tracker.track(clip, queries=QUERIES, pad_queries=20, progress=False)
    np.testing.assert_array_equal(again.tracks, padded.tracks)  # seeded
    assert np.abs(padded.tracks - plain.tracks).max() > 1e-2  # points attend to each other

    # "Pad each pass to N": the forward pass holds all 4 points and the backward pass the 3
    # with a query frame after 0, so N = 3 pads nothing and N = 4 pads only the backward pass.
    same = tracker.track(clip, queries=QUERIES, pad_queries=3, progress=False)
    np.testing.assert_array_equal(same.tracks, plain.tracks)
    backward_only = tracker.track(clip, queries=QUERIES, pad_queries=4, progress=False)
    after_query = np.arange(clip.shape[0])[None, :] >= QUERIES[:, :1]  # forward-pass frames
    np.testing.assert_array_equal(backward_only.tracks[after_query], plain.tracks[after_query])
    assert np.abs(backward_only.tracks - plain.tracks)[~after_query].max() > 1e-2

    # Without the point self-attention the padding changes nothing.
    isolated = _without_point_attention()
    alone = isolated.track(clip, queries=QUERIES, progress=False)
    with_padding = isolated.track(clip, queries=QUERIES, pad_queries=20, progress=False)
    np.testing.assert_allclose(with_padding.tracks, alone.tracks, atol=1e-4)
    np.testing.assert_allclose(with_padding.visibility, alone.visibility, atol=1e-5)


def test_grid_mask_and_default_grid(tracker, clip, tmp_path):
    result = tracker.track(clip, grid=4, grid_frame=3, progress=False)
    assert result.num_points == 16 and (result.queries[:, 0] == 3).all()
    mask = np.zeros((37, 53), np.uint8)
    mask[:, :26] = 255
    from PIL import Image

    Image.fromarray(mask).save(tmp_path / "mask.png")
    masked = tracker.track(clip, grid=4, mask=tmp_path / "mask.png", progress=False)
    assert masked.num_points == 8 and (masked.queries[:, 1] < 26).all()
    default = tracker.track(clip[:4], progress=False)
    assert default.num_points == 100


@pytest.mark.parametrize("queries, message", [
    ([[0, 60, 10], [0, 1, 1], [1, 5, -3]],
     r"2 queries are outside the 53x37 frame.*point 0 .*point 2 "),
    ([[0, 1, 1], [0, np.nan, 1]], r"1 query contains NaN.*point 1"),
    ([[14, 1, 1]], r"frame index outside 0..13"),
    ([[1.5, 1, 1]], r"not a whole number"),
    ([[1, 2]], r"\[N, 3\]"),
])
def test_bad_queries_name_the_rows(tracker, clip, queries, message):
    with pytest.raises(TaptrError, match=message):
        tracker.track(clip, queries=queries, progress=False)


def test_bad_grid_arguments(tracker, clip):
    with pytest.raises(TaptrError, match="grid frame 20"):
        tracker.track(clip, grid=3, grid_frame=20, progress=False)
    with pytest.raises(TaptrError, match="give a grid"):
        tracker.track(clip, mask=np.ones((37, 53)), progress=False)
    with pytest.raises(TaptrError, match="inside the mask"):
        tracker.track(clip, grid=3, mask=np.zeros((37, 53)), progress=False)
    with pytest.raises(TaptrError, match="mask is 10x10"):
        tracker.track(clip, grid=3, mask=np.ones((10, 10)), progress=False)


def test_from_pretrained_and_device_errors(tracker, tmp_path, clip, tiny_weights):
    loaded = Tracker.from_pretrained(tiny_weights, device="cpu")
    expected = tracker.track(clip[:6], queries=QUERIES[:1], progress=False)
    got = loaded.track(clip[:6], queries=QUERIES[:1], progress=False)
    np.testing.assert_array_equal(got.tracks, expected.tracks)
    with pytest.raises(TaptrError, match="no such checkpoint"):
        Tracker.from_pretrained(str(tmp_path / "taptrv2.pth"))
    with pytest.raises(TaptrError, match="not found"):
        Tracker.from_pretrained(str(tmp_path / "missing.safetensors"))
    folder = tmp_path / "weights_folder"
    folder.mkdir()
    with pytest.raises(TaptrError, match="is an empty folder, not weights"):
        Tracker.from_pretrained(str(folder))
    (folder / "notes.txt").write_text("x")
    with pytest.raises(TaptrError, match="folder without taptr_onnx.json"):
        Tracker.from_pretrained(str(folder))
    with pytest.raises(TaptrError, match="fp16 needs a GPU"):
        Tracker(tiny_model(), device="cpu", dtype="fp16")
    with pytest.raises(TaptrError, match="unknown device"):
        Tracker(tiny_model(), device="toaster")


# bf16 against fp32 on the CPU (tiny model, this 53x37 clip): measured 0.35 px at most and
# 0.05 px on average, visibility within 2e-4. The bound leaves room for other CPUs' kernels.
BF16_MAX_PX, BF16_MEAN_PX, BF16_VISIBILITY = 1.0, 0.2, 0.01


def test_bf16_autocast_on_cpu_stays_close_to_fp32(tracker, clip):
    full = tracker.track(clip, queries=QUERIES, progress=False)
    half = Tracker(tiny_model(), device="cpu", dtype="bf16").track(
        clip, queries=QUERIES, progress=False)
    difference = np.abs(half.tracks - full.tracks)
    assert difference.max() <= BF16_MAX_PX and difference.mean() <= BF16_MEAN_PX, difference
    assert np.abs(half.visibility - full.visibility).max() <= BF16_VISIBILITY
    assert difference.max() > 0  # it did run in bf16, not silently in fp32


def test_result_save_and_load(tracker, clip, tmp_path):
    result = tracker.track(clip, queries=QUERIES, progress=False)
    result.save(tmp_path / "t.npz")
    from taptr.result import TrackResult

    loaded = TrackResult.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(loaded.tracks, result.tracks)
    assert loaded.video_size == (53, 37)
    result.save_overlay(tmp_path / "overlay.mp4")  # uses the tracked array
    assert (tmp_path / "overlay.mp4").stat().st_size > 0


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_video_length(tmp_path):
    """The issue's criterion: peak RSS for a long video within 1.2x of a short one (each in a
    fresh process; both passes, frames generated lazily)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "track_speed.py"
    output = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(script), "--presets", "tiny", "--frames", "24", "240",
                    "--points", "16", "--query-frame", "middle", "--synthetic", "--device", "cpu",
                    "--threads", "1", "--json", str(output)],
                   check=True, capture_output=True, timeout=600)
    short, long = json.loads(output.read_text())
    assert (short["frames"], long["frames"]) == (24, 240)
    assert long["peak_rss_mb"] < 1.2 * short["peak_rss_mb"], (short, long)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("kind", ["file", "folder", "gif", "array", "readonly_array", "tensor"])
def test_no_third_party_warning_for_any_input_kind(tracker, clip, tmp_path, kind):
    """A warning from a library we call (e.g. PyTorch's 'NumPy array is not writable') must
    not reach the user: warnings are errors here."""
    from PIL import Image

    if kind == "file":
        video = str(write_clip(tmp_path / "clip.mp4", clip))
    elif kind == "folder":
        for index, frame in enumerate(clip):
            Image.fromarray(frame).save(tmp_path / f"{index:03d}.png")
        video = str(tmp_path)
    elif kind == "gif":
        frames = [Image.fromarray(frame) for frame in clip]
        frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:])
        video = str(tmp_path / "clip.gif")
    elif kind == "tensor":
        video = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255.0
    else:
        video = clip.copy()
        video.flags.writeable = kind == "array"
    result = tracker.track(video, queries=QUERIES, progress=False)
    assert result.tracks.shape == (len(QUERIES), len(clip), 2)


def test_video_sizes_are_named_width_then_height(tracker):
    from taptr.coords import FrameSize
    from taptr.io.video import open_video

    video = np.random.default_rng(0).integers(0, 255, (5, 17, 15, 3), dtype=np.uint8)
    assert open_video(video).size == FrameSize(width=15, height=17)
    result = tracker.track(video, queries=[[0, 3.0, 4.0]], progress=False)
    assert isinstance(result.video_size, FrameSize)
    assert (result.video_size.width, result.video_size.height) == (15, 17)
    assert str(result.video_size) == "15x17"


def test_model_io_takes_stream_models_only():
    """The contract is `StreamModel` (config, device, stream): the network is one; anything
    else is refused by name instead of failing later inside the loop."""
    from taptr.model_io import ModelIO, StreamModel

    assert isinstance(tiny_model(), StreamModel)
    with pytest.raises(TypeError, match="object is not a StreamModel"):
        ModelIO(object(), "cpu")
