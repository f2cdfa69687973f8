"""TAP-Vid metrics: three hand-computed worked examples, properties, a loop reference."""

import numpy as np
import pytest

from taptr.evaluation import METRIC_NAMES, compute_tapvid_metrics
from taptr.evaluation.metrics import THRESHOLDS, evaluation_mask

GT_XY = (100.0, 50.0)


def still_track(num_frames):
    """[1, 1, T, 2]: the worked examples' GT point at (x, y) = (100, 50) in every frame."""
    return np.tile(np.array(GT_XY), (1, 1, num_frames, 1))


def score(query_t, gt_occluded, pred_occluded, pred_tracks, mode):
    gt_occluded = np.array(gt_occluded, dtype=bool)[None, None]
    num_frames = gt_occluded.shape[-1]
    query = np.array([[[query_t, GT_XY[1], GT_XY[0]]]], dtype=np.float64)
    return compute_tapvid_metrics(
        query,
        gt_occluded,
        still_track(num_frames),
        np.array(pred_occluded, dtype=bool)[None, None],
        pred_tracks,
        mode,
    )


def example_1():
    pred = still_track(5)
    pred[0, 0, :, 0] += [0, 0.5, 1.5, 3.0, 10.0]
    return score(0, [False] * 5, [False] * 5, pred, "first")


def example_2():
    pred = still_track(6)
    pred[0, 0, 0] = (0.0, 0.0)
    pred[0, 0, 3, 0] += 50
    pred[0, 0, 4, 1] += 1
    pred[0, 0, 5, 0] += 2
    gt_occluded = [True, False, False, True, False, False]
    pred_occluded = [False, False, False, False, True, False]
    return score(1, gt_occluded, pred_occluded, pred, "first")


def example_3_arrays():
    pred = still_track(4)
    pred[0, 0, 0, 0] += 0.5
    pred[0, 0, 1, 1] += 5
    pred[0, 0, 2, 0] += 99
    pred[0, 0, 3, 0] += 20
    return [False] * 4, [False, False, True, True], pred


def assert_metrics(metrics, expected):
    for name, value in expected.items():
        assert metrics[name].shape == (1,), name
        assert metrics[name][0] == pytest.approx(value, abs=1e-6), name


def test_example_1_first_growing_error():
    assert_metrics(
        example_1(),
        {
            "occlusion_accuracy": 1.0,
            "pts_within_1": 0.25, "pts_within_2": 0.5, "pts_within_4": 0.75,
            "pts_within_8": 0.75, "pts_within_16": 1.0,
            "jaccard_1": 1 / 7, "jaccard_2": 1 / 3, "jaccard_4": 0.6, "jaccard_8": 0.6,
            "jaccard_16": 1.0,
            "average_pts_within_thresh": 0.65,
            "average_jaccard": 0.535238,
        },
    )


def test_example_2_occlusion_and_strict_threshold():
    assert_metrics(
        example_2(),
        {
            "occlusion_accuracy": 0.5,
            "pts_within_1": 1 / 3, "pts_within_2": 2 / 3, "pts_within_4": 1.0,
            "pts_within_8": 1.0, "pts_within_16": 1.0,
            "jaccard_1": 0.2, "jaccard_2": 0.2, "jaccard_4": 0.5, "jaccard_8": 0.5,
            "jaccard_16": 0.5,
            "average_pts_within_thresh": 0.8,
            "average_jaccard": 0.38,
        },
    )


def test_example_3_strided_counts_backward_frames():
    gt_occluded, pred_occluded, pred = example_3_arrays()
    assert_metrics(
        score(2, gt_occluded, pred_occluded, pred, "strided"),
        {
            "occlusion_accuracy": 2 / 3,
            "pts_within_1": 1 / 3, "pts_within_2": 1 / 3, "pts_within_4": 1 / 3,
            "pts_within_8": 2 / 3, "pts_within_16": 2 / 3,
            "jaccard_1": 0.25, "jaccard_2": 0.25, "jaccard_4": 0.25,
            "jaccard_8": 2 / 3, "jaccard_16": 2 / 3,
            "average_pts_within_thresh": 7 / 15,
            "average_jaccard": 0.416667,
        },
    )


def test_example_3_in_first_mode_scores_only_the_last_frame():
    gt_occluded, pred_occluded, pred = example_3_arrays()
    metrics = score(2, gt_occluded, pred_occluded, pred, "first")
    assert_metrics(metrics, {name: 0.0 for name in METRIC_NAMES})


def test_two_video_dataset_is_the_mean_of_per_video_values():
    # Examples 1 and 2 differ in length, so each is its own batch; the dataset score is the
    # mean of the per-video values, not of pooled cells.
    per_video = [example_1()["average_jaccard"][0], example_2()["average_jaccard"][0]]
    assert np.mean(per_video) == pytest.approx(0.457619, abs=1e-6)


def test_two_videos_in_one_batch_give_one_value_each():
    # Two videos of equal length in one batch: video 0 = example 2, video 1 = its perfect twin.
    pred = still_track(6)
    pred[0, 0, 0] = (0.0, 0.0)
    pred[0, 0, 3, 0] += 50
    pred[0, 0, 4, 1] += 1
    pred[0, 0, 5, 0] += 2
    gt_occluded = np.array([True, False, False, True, False, False])
    pred_occluded = np.array([False, False, False, False, True, False])
    metrics = compute_tapvid_metrics(
        np.array([[[1, 50, 100]], [[1, 50, 100]]], dtype=np.float64),
        np.stack([gt_occluded, gt_occluded])[:, None],
        np.concatenate([still_track(6), still_track(6)]),
        np.stack([pred_occluded, gt_occluded])[:, None],
        np.concatenate([pred, still_track(6)]),
        "first",
    )
    np.testing.assert_allclose(metrics["average_jaccard"], [0.38, 1.0], atol=1e-12)
    np.testing.assert_allclose(metrics["occlusion_accuracy"], [0.5, 1.0], atol=1e-12)


def random_case(rng, batch=3, tracks=7, frames=11):
    gt_tracks = rng.uniform(0, 256, size=(batch, tracks, frames, 2))
    gt_occluded = rng.random((batch, tracks, frames)) < 0.3
    query_t = rng.integers(0, frames - 1, size=(batch, tracks))
    gt_occluded[np.arange(batch)[:, None], np.arange(tracks), query_t] = False
    bi, ti = np.meshgrid(np.arange(batch), np.arange(tracks), indexing="ij")
    query_yx = gt_tracks[bi, ti, query_t][..., ::-1]
    query_points = np.concatenate([query_t[..., None].astype(float), query_yx], axis=-1)
    pred_tracks = gt_tracks + rng.normal(scale=6.0, size=gt_tracks.shape)
    pred_occluded = rng.random((batch, tracks, frames)) < 0.3
    return query_points, gt_occluded, gt_tracks, pred_occluded, pred_tracks


def reference_metrics(query_points, gt_occluded, gt_tracks, pred_occluded, pred_tracks, mode):
    """Cell-by-cell loop over the written definitions (no vectorisation shared with the code)."""
    batch, tracks, frames = gt_occluded.shape
    out = {name: [] for name in METRIC_NAMES}
    for b in range(batch):
        cells = []
        for n in range(tracks):
            q = int(round(query_points[b, n, 0]))
            for t in range(frames):
                if (mode == "first" and t > q) or (mode == "strided" and t != q):
                    d = np.hypot(*(pred_tracks[b, n, t] - gt_tracks[b, n, t]))
                    cells.append((not gt_occluded[b, n, t], not pred_occluded[b, n, t], d))
        out["occlusion_accuracy"].append(np.mean([v == p for v, p, _ in cells]))
        jaccards, withins = [], []
        for delta in THRESHOLDS:
            visible = [c for c in cells if c[0]]
            within = sum(1 for v, p, d in visible if d < delta) / len(visible)
            tp = sum(1 for v, p, d in cells if v and p and d < delta)
            fp = sum(1 for v, p, d in cells if p and not (v and d < delta))
            jaccard = tp / (len(visible) + fp)
            out[f"pts_within_{delta}"].append(within)
            out[f"jaccard_{delta}"].append(jaccard)
            jaccards.append(jaccard)
            withins.append(within)
        out["average_jaccard"].append(np.mean(jaccards))
        out["average_pts_within_thresh"].append(np.mean(withins))
    return out


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_matches_a_loop_reference_on_random_inputs(mode):
    case = random_case(np.random.default_rng(1))
    metrics = compute_tapvid_metrics(*case, mode)
    reference = reference_metrics(*case, mode)
    for name in METRIC_NAMES:
        np.testing.assert_allclose(metrics[name], reference[name], atol=1e-12, err_msg=name)


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_perfect_prediction_scores_one_everywhere(mode):
    query_points, gt_occluded, gt_tracks, _, _ = random_case(np.random.default_rng(2))
    metrics = compute_tapvid_metrics(
        query_points, gt_occluded, gt_tracks, gt_occluded, gt_tracks.copy(), mode
    )
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(metrics[name], 1.0, err_msg=name)


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_everything_predicted_occluded_gives_zero_jaccard(mode):
    query_points, gt_occluded, gt_tracks, _, pred_tracks = random_case(np.random.default_rng(3))
    metrics = compute_tapvid_metrics(
        query_points, gt_occluded, gt_tracks, np.ones_like(gt_occluded), pred_tracks, mode
    )
    np.testing.assert_array_equal(metrics["average_jaccard"], 0.0)
    # Position accuracy ignores predicted visibility, so it stays positive.
    assert np.all(metrics["pts_within_16"] > 0)


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_shifting_prediction_and_ground_truth_together_changes_nothing(mode):
    rng = np.random.default_rng(4)
    query_points, gt_occluded, gt_tracks, pred_occluded, pred_tracks = random_case(rng)
    before = compute_tapvid_metrics(
        query_points, gt_occluded, gt_tracks, pred_occluded, pred_tracks, mode
    )
    # Shift by whole multiples of 1/8 px so no distance moves by a rounding error.
    shift = np.array([37.125, -12.5])
    shifted_queries = query_points + np.array([0.0, shift[1], shift[0]])
    after = compute_tapvid_metrics(
        shifted_queries, gt_occluded, gt_tracks + shift, pred_occluded, pred_tracks + shift, mode
    )
    for name in METRIC_NAMES:
        np.testing.assert_allclose(after[name], before[name], atol=1e-12, err_msg=name)
    assert 0 < before["average_jaccard"].min() < 1  # the case is not degenerate


def test_trackwise_metrics_have_one_value_per_track():
    case = random_case(np.random.default_rng(5), batch=2, tracks=4)
    metrics = compute_tapvid_metrics(*case, "strided", get_trackwise_metrics=True)
    assert metrics["average_jaccard"].shape == (2, 4)
    # Track 0 of video 0 alone must equal the per-video metric of a one-track video.
    single = compute_tapvid_metrics(*(a[:1, :1] for a in case), "strided")
    assert metrics["jaccard_4"][0, 0] == pytest.approx(single["jaccard_4"][0])


def test_evaluation_mask_modes():
    first = evaluation_mask(np.array([0.0, 2.4, 2.6]), 4, "first")
    strided = evaluation_mask(np.array([0.0, 2.4, 2.6]), 4, "strided")
    np.testing.assert_array_equal(first, [[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(strided, [[0, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]])
    with pytest.raises(ValueError):
        evaluation_mask(np.array([0.0]), 4, "middle")


def test_no_visible_ground_truth_gives_nan_like_tapnet():
    metrics = score(0, [False, True, True], [False, False, False], still_track(3), "first")
    assert np.isnan(metrics["pts_within_1"][0])
    assert metrics["jaccard_1"][0] == 0.0  # 0 TP / (0 + 2 FP)
