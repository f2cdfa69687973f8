"""The Kubric MOVi-F reader on a tiny fake dataset in the CoTracker layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from taptr.data.kubric import KubricAugmentations, KubricClips, read_sequence
from taptr.data.kubric_augment import eraser, restart_trajectories
from taptr.errors import TaptrError
from tracking_helpers import colours_at

FRAMES, SIZE, POINTS = 8, 64, 120


def smooth_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 `[size, size, 3]` smooth colour noise (features of about 10 px)."""
    noise = rng.random((size // 8, size // 8, 3)).astype(np.float32)
    texture = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return (texture * 255).round().astype(np.uint8)


def write_fake_sequence(root, name: str, rng: np.random.Generator) -> dict:
    """A camera sliding over a static texture by whole pixels: frame t shows texture pixels
    [oy_t : oy_t + 64, ox_t : ox_t + 64], so a texture point P is at P - (ox_t, oy_t)."""
    texture = smooth_texture(rng, 2 * SIZE)
    offsets = np.cumsum(rng.integers(0, 4, size=(FRAMES, 2)), axis=0)  # (ox, oy), growing
    folder = root / name / "frames"
    folder.mkdir(parents=True)
    frames = []
    for t, (ox, oy) in enumerate(offsets):
        frame = texture[oy : oy + SIZE, ox : ox + SIZE]
        frames.append(frame)
        cv2.imwrite(str(folder / f"{t:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    texture_points = rng.uniform(4, 2 * SIZE - 40, size=(POINTS, 2)).astype(np.float32)
    coords = texture_points[:, None, :] - offsets[None].astype(np.float32)  # [N, T, 2]
    occluded = rng.random((POINTS, FRAMES)) < 0.1
    np.save(root / name / f"{name}.npy", {"coords": coords, "visibility": occluded})
    return {"frames": np.stack(frames), "coords": coords, "occluded": occluded}


@pytest.fixture(scope="module")
def kubric_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kubric")
    rng = np.random.default_rng(0)
    truth = {name: write_fake_sequence(root, name, rng) for name in ("0", "1", "2")}
    return root, truth


def test_reader_inverts_the_misnamed_visibility_flag(kubric_root):
    root, truth = kubric_root
    clip = read_sequence(root / "1")
    expected = truth["1"]
    np.testing.assert_array_equal(clip.frames, expected["frames"])  # RGB, not BGR
    np.testing.assert_allclose(clip.tracks, expected["coords"].transpose(1, 0, 2))
    x, y = clip.tracks[..., 0], clip.tracks[..., 1]
    inside = (x >= 0) & (x <= SIZE - 1) & (y >= 0) & (y <= SIZE - 1)
    np.testing.assert_array_equal(clip.visible, ~expected["occluded"].T & inside)
    assert (~inside).any() and expected["occluded"].any()  # both cases are exercised
    bgr = read_sequence(root / "1", bgr=True)
    np.testing.assert_array_equal(bgr.frames, expected["frames"][..., ::-1])


def test_raw_clips_are_annotation_subsets_with_official_query_frames(kubric_root):
    root, truth = kubric_root
    clips = KubricClips(
        root,
        seed=3,
        size=(SIZE, SIZE),
        num_frames=FRAMES,
        num_points=40,
        augmentations=KubricAugmentations.none(),
    )
    sample = clips(0)
    sample.check()
    sequence = sample.name.split("-")[-1]
    annotation = truth[sequence]["coords"].transpose(1, 0, 2)  # [T, N_all, 2]
    matches = (
        (torch.from_numpy(annotation)[:, :, None] - sample.tracks[:, None]).abs().amax(dim=(0, 3))
    )
    assert (matches.amin(dim=0) < 1e-5).all()  # every track is an annotated track
    first_visible = sample.visible.float().argmax(dim=0)
    assert torch.equal(sample.query_frames, first_visible)
    middle = FRAMES // 2
    assert (sample.visible[0] | sample.visible[middle]).all()  # candidates: frame 0 or T/2
    assert torch.all(sample.query_frames[1:] >= sample.query_frames[:-1])  # sorted by start
    np.testing.assert_array_equal(sample.video.numpy(), truth[sequence]["frames"])


def test_geometric_augmentations_move_points_with_the_image(kubric_root):
    """Panning, zoom, crop, flips and the final resize must map points exactly like pixels:
    the colour at a visible track matches its colour at the query frame, and a 2 px shift of
    the tracks breaks that."""
    root, _ = kubric_root
    augmentations = KubricAugmentations(photometric=False, restarts=False)
    clips = KubricClips(
        root, seed=5, size=(40, 56), num_frames=FRAMES, num_points=60, augmentations=augmentations
    )
    for index in range(3):
        sample = clips(index)
        sample.check()
        assert sample.video.shape == (FRAMES, 40, 56, 3)
        query_colour = colours_at(sample.video, sample.tracks)[
            sample.query_frames, torch.arange(sample.num_points)
        ]
        error = (colours_at(sample.video, sample.tracks) - query_colour).abs().amax(-1)
        shifted = (colours_at(sample.video, sample.tracks + 2.0) - query_colour).abs().amax(-1)
        visible = sample.visible
        assert error[visible].median() < 4.0 and error[visible].quantile(0.9) < 12.0
        assert shifted[visible].median() > 2 * error[visible].median() + 4.0


def write_blob_sequence(root, name: str, rng: np.random.Generator) -> None:
    """Four Gaussian spots (sigma 2.5 px) moving by sub-pixel amounts: the annotated tracks
    are the spots' exact centres."""
    centres = np.array([[18.3, 17.6], [45.2, 19.9], [16.7, 46.1], [44.4, 44.8]], dtype=np.float32)
    motion = rng.uniform(-0.9, 0.9, size=(FRAMES, 4, 2)).cumsum(axis=0).astype(np.float32)
    tracks = centres[None] + motion  # [T, 4, 2]
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    folder = root / name / "frames"
    folder.mkdir(parents=True)
    for t in range(FRAMES):
        image = np.zeros((SIZE, SIZE), np.float32)
        for x, y in tracks[t]:
            image += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.5**2))
        frame = np.repeat((image * 250).round().astype(np.uint8)[..., None], 3, axis=2)
        cv2.imwrite(str(folder / f"{t:03d}.png"), frame)
    occluded = np.zeros((4, FRAMES), bool)
    np.save(
        root / name / f"{name}.npy", {"coords": tracks.transpose(1, 0, 2), "visibility": occluded}
    )


def test_geometric_augmentations_are_exact_to_a_tenth_of_a_pixel(tmp_path):
    """Spots must stay centred on their tracks through panning, zoom, crop, flips and the
    final resize (half-pixel conventions included)."""
    rng = np.random.default_rng(4)
    for name in ("a", "b"):
        write_blob_sequence(tmp_path, name, rng)
    augmentations = KubricAugmentations(photometric=False, restarts=False)
    clips = KubricClips(
        tmp_path,
        seed=1,
        size=(48, 56),
        num_frames=FRAMES,
        num_points=4,
        augmentations=augmentations,
    )
    errors = []
    for index in range(6):
        sample = clips(index)
        frames = sample.video[..., 0].float()
        height, width = frames.shape[1:]
        ys, xs = torch.meshgrid(
            torch.arange(height).float(), torch.arange(width).float(), indexing="ij"
        )
        for t, n in zip(*torch.nonzero(sample.visible, as_tuple=True)):
            x, y = sample.tracks[t, n]
            if not (7 <= x <= width - 8 and 7 <= y <= height - 8):
                continue  # spot cut by the border: its centroid is biased
            window = ((xs - x).abs() <= 6) & ((ys - y).abs() <= 6)
            weights = frames[t] * window
            centroid = torch.stack([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
            errors.append((centroid - sample.tracks[t, n]).norm().item())
    assert len(errors) > 50
    assert np.median(errors) < 0.05 and np.max(errors) < 0.15


def test_eraser_hides_exactly_the_points_it_paints_over(kubric_root):
    root, _ = kubric_root
    clip = read_sequence(root / "0")
    erased = eraser(clip, np.random.default_rng(1), probability=1.0)
    np.testing.assert_array_equal(erased.frames[0], clip.frames[0])  # frame 0 is kept
    assert not (erased.visible & ~clip.visible).any()  # only ever hides
    hidden = clip.visible & ~erased.visible
    assert hidden.sum() > 10
    changed = (erased.frames != clip.frames).any(axis=-1)  # [T, H, W]
    t_index, n_index = np.nonzero(hidden)
    xs = np.clip(np.round(clip.tracks[t_index, n_index, 0]).astype(int), 0, SIZE - 1)
    ys = np.clip(np.round(clip.tracks[t_index, n_index, 1]).astype(int), 0, SIZE - 1)
    assert changed[t_index, ys, xs].mean() > 0.9
    # a point still visible is never in the middle of a painted area
    still = np.nonzero(erased.visible[1:])
    t_still, n_still = still[0] + 1, still[1]
    xs = np.round(clip.tracks[t_still, n_still, 0]).astype(int)
    ys = np.round(clip.tracks[t_still, n_still, 1]).astype(int)
    interior = (xs >= 1) & (xs <= SIZE - 2) & (ys >= 1) & (ys <= SIZE - 2)
    xs, ys = np.clip(xs, 1, SIZE - 2), np.clip(ys, 1, SIZE - 2)
    around = np.stack(
        [changed[t_still, ys + dy, xs + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    )
    assert not (around.all(axis=0) & interior).any()


def test_restarts_move_a_quarter_of_the_starts_to_visible_frames():
    rng = np.random.default_rng(2)
    visible = rng.random((FRAMES, 40)) < 0.7
    visible[:, 0] = False  # a point never visible is never restarted
    restarted, starts = restart_trajectories(visible, rng, fraction=0.25)
    changed = (restarted != visible).any(axis=0)
    assert 0 < changed.sum() <= 40 // 4 and not changed[0]
    for point in range(1, 40):
        assert restarted[starts[point], point]
        assert not restarted[: starts[point], point].any()
        np.testing.assert_array_equal(
            restarted[starts[point] :, point], visible[starts[point] :, point]
        )


def test_full_pipeline_is_deterministic_and_valid(kubric_root):
    root, _ = kubric_root
    clips = KubricClips(root, seed=9, size=(SIZE, SIZE), num_frames=6, num_points=50)
    first, again, other = clips(4), clips(4), clips(5)
    first.check()
    assert first.video.shape == (6, SIZE, SIZE, 3) and first.tracks.shape == (6, 50, 2)
    for name in ("video", "tracks", "visible", "query_frames"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.video, other.video)
    assert len({clips.sequence_index(i) for i in range(3)}) == 3  # an epoch visits each once


def test_too_few_candidate_points_is_a_user_error(kubric_root):
    root, _ = kubric_root
    clips = KubricClips(root, num_frames=FRAMES, num_points=10 * POINTS, max_attempts=3)
    with pytest.raises(TaptrError, match="no usable Kubric clip"):
        clips(0)
    with pytest.raises(TaptrError):
        KubricClips(root / "missing")


def test_kubric_data_feeds_the_training_loop(kubric_root, tmp_path):
    """`taptr train --data kubric:PATH`: the network is given, step after step, the Kubric
    clips 0, 1, ... of the run's data seed, each with the configured length and number of
    points and resized to the model input, and the loop trains on them."""
    import math

    from taptr.training.batch import make_batch
    from taptr.training.config import TrainConfig
    from taptr.training.trainer import Trainer

    root, _ = kubric_root
    config = TrainConfig().override([
        "model.preset=tiny", f"data.source=kubric:{root}", f"run.out={tmp_path / 'run'}",
        "run.steps=2", "data.batch=1", f"data.clip_length={FRAMES}", "data.num_points=16",
        "optim.warmup_steps=1", "eval.every=0", "run.log_every=1", "run.ckpt_every=1000",
        "run.export_every=1000", "run.progress=false", "run.device=cpu"])
    trainer = Trainer(config)
    fed = []  # (video, query points, query frames) of every forward pass
    trainer.model.register_forward_pre_hook(
        lambda module, args: fed.append([tensor.detach().clone() for tensor in args[:3]]))
    result = trainer.run()
    assert result.step == 2 and math.isfinite(result.last_log["loss"])

    source = trainer.clip_source
    assert isinstance(source, KubricClips) and len(source) == 3  # the sequences under root
    height, width = trainer.input_size
    assert len(fed) == 2  # one clip per step
    for index, (video, points, frames) in enumerate(fed):
        assert video.shape == (1, FRAMES, 3, height, width)
        assert points.shape == (1, 16, 2) and frames.shape == (1, 16)
        sample = source(index)  # clip `index` of the run's stream, made again
        sample.check()
        assert sample.video.shape[0] == FRAMES and sample.num_points == 16
        expected = make_batch([sample], (height, width))
        assert torch.equal(video, expected["video"])
        assert torch.equal(points, expected["query_points"])
        assert torch.equal(frames, expected["query_frames"])
        assert torch.equal(frames[0], sample.query_frames)
        assert sample.visible[sample.query_frames, torch.arange(16)].all()
    assert not torch.equal(fed[0][0], fed[1][0])  # two different clips
