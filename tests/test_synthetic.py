"""The synthetic scene engine: exact ground truth, determinism, shapes, held-out pickles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from taptr.data.scenes import SceneConfig, SceneGenerator, write_heldout_set
from taptr.data.scenes.effects import jpeg_artifacts
from taptr.data.scenes.render import render_layout
from taptr.data.scenes.motion import (
    frame_fields,
    invert_deformation,
    random_deformation_fields,
    sample_displacement,
)
from taptr.data.scenes.textures import TextureLibrary, texture_split
from taptr.errors import TaptrError
from tracking_helpers import colours_at

# Non-square on purpose: catches x/y mix-ups.
SIZE = (96, 128)


# The engine's many small ops run much faster single-threaded on a busy 2-core machine (as in
# DataLoader workers).
pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**changes) -> SceneConfig:
    settings = dict(size=SIZE, num_frames=12, num_points=96, effects=False, difficulty=0.6)
    settings.update(changes)
    return SceneConfig(**settings)


@pytest.fixture(scope="module")
def clean_batch():
    """Two scenes rendered together, camera effects off."""
    return SceneGenerator(small_config()).generate_details([11, 12])


def test_sample_shapes_dtypes_and_query_visibility():
    config = small_config(effects=True)
    sample = SceneGenerator(config).generate(3)
    sample.check()  # dtypes, shapes, visible at query frame
    assert sample.video.shape == (12, *SIZE, 3) and sample.video.dtype == torch.uint8
    assert sample.tracks.shape == (12, 96, 2) and sample.tracks.dtype == torch.float32
    assert sample.visible.shape == (12, 96) and sample.visible.dtype == torch.bool
    assert sample.query_frames.dtype == torch.int64
    assert torch.isfinite(sample.tracks).all()
    queries = sample.queries()
    assert queries.shape == (96, 3)
    assert torch.equal(queries[:, 0].long(), sample.query_frames)


def test_same_seed_same_clip_and_different_seed_different_clip():
    generator = SceneGenerator(small_config(effects=True))
    first, again, other = generator.generate(5), generator.generate(5), generator.generate(6)
    for name in ("video", "tracks", "visible", "query_frames"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.video, other.video)
    assert not torch.allclose(first.tracks, other.tracks)


def test_batched_rendering_matches_single_scenes(clean_batch):
    single = SceneGenerator(small_config()).generate(12)
    batched = clean_batch.samples[1]
    assert (single.video.int() - batched.video.int()).abs().max() <= 1
    assert torch.allclose(single.tracks, batched.tracks, atol=1e-3)
    assert torch.equal(single.visible, batched.visible)


def test_visible_points_keep_their_colour(clean_batch):
    """With effects off, the colour at a visible ground-truth point is the colour at its
    query; shifting the tracks by 3 px breaks that, so the check has teeth."""
    for sample, points in zip(clean_batch.samples, clean_batch.points):
        query_colour = colours_at(sample.video, sample.tracks)[
            sample.query_frames, torch.arange(sample.num_points)
        ]
        uncovered = sample.visible & (points.coverage < 0.01)
        error = (colours_at(sample.video, sample.tracks) - query_colour[None]).abs().amax(-1)
        shifted = (
            (colours_at(sample.video, sample.tracks + 3.0) - query_colour[None]).abs().amax(-1)
        )
        assert uncovered.sum() > 200
        assert error[uncovered].median() < 3.0
        assert error[uncovered].quantile(0.9) < 20.0
        assert shifted[uncovered].median() > 12.0


def _coordinate_ramp(height: int, width: int, third_channel: float) -> torch.Tensor:
    """`[3, H, W]` texture whose colour is its own pixel coordinate (x / W, y / H) and a
    constant: linear, so bilinear sampling of it (and of its affine warps) is exact."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    constant = torch.full((height, width), third_channel)
    return torch.stack([xs / width, ys / height, constant]).float()


def test_tracks_land_on_the_same_texture_coordinate_in_every_frame():
    """Re-render a scene with textures that encode their own coordinates: at the ground-truth
    track, the decoded texture coordinate must be the same in every visible frame (to a few
    hundredths of a texture pixel), for every layer and motion (rotation, scale, homography,
    elastic deformation). Checked where the point shows its own layer alone: the third
    channel holds a code per layer, and mixed pixels (soft edges) decode to no code."""
    batch = SceneGenerator(small_config(difficulty=1.0)).generate_details([4])
    layout, points, sample = batch.layout, batch.points[0], batch.samples[0]
    assert layout.deforming_slots  # the scene exercises the deformation
    size = layout.foreground.shape[-1]
    background_height, background_width = layout.background.shape[-2:]
    codes = 0.1 + 0.8 * torch.arange(layout.num_slots + 1) / (layout.num_slots + 1) ** 1.5
    ramps = torch.stack([_coordinate_ramp(size, size, float(c)) for c in codes[1:]])
    alpha = layout.foreground[:, :, 3:4]
    layout.foreground = torch.cat([ramps[None] * alpha, alpha], dim=2)
    layout.background = _coordinate_ramp(background_height, background_width, float(codes[0]))[None]
    frames = render_layout(layout).video[0].permute(1, 2, 3, 0)  # float [T, H, W, 3]
    decoded = colours_at(frames, sample.tracks)  # [T, N, 3]
    extent = torch.where(
        (points.layers == 0)[:, None],
        torch.tensor([background_width, background_height]).float(),
        torch.tensor([size, size]).float(),
    )
    texture_xy = decoded[..., :2] * extent  # texture pixels
    query_index = (sample.query_frames, torch.arange(sample.num_points))
    drift = (texture_xy - texture_xy[query_index][None]).norm(dim=-1)  # [T, N]
    pure = (decoded[..., 2] - codes[points.layers][None]).abs() < 1e-5
    checked = sample.visible & pure & pure[query_index][None]
    assert checked.sum() > 500
    assert drift[checked].median() < 0.01
    assert drift[checked].quantile(0.99) < 0.05


def test_hidden_points_are_covered_by_nearer_layers_or_outside(clean_batch):
    owner = clean_batch.rendered.owner
    for scene, (sample, points) in enumerate(zip(clean_batch.samples, clean_batch.points)):
        frames, height, width, _ = sample.video.shape
        x, y = sample.tracks[..., 0], sample.tracks[..., 1]
        inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        hidden_inside = ~sample.visible & inside
        # nearest owner layer over the 2x2 pixels around each point
        x0 = x.floor().long().clamp(0, width - 2)
        y0 = y.floor().long().clamp(0, height - 2)
        time = torch.arange(frames)[:, None].expand_as(x0)
        nearest_owner = torch.stack(
            [owner[scene][time, y0 + dy, x0 + dx].long() for dy in (0, 1) for dx in (0, 1)]
        ).amax(dim=0)
        nearer = nearest_owner > points.layers[None]
        assert hidden_inside.sum() > 5 and (~inside).sum() > 0
        assert (points.coverage[hidden_inside] >= 0.5).all()
        assert (nearer & hidden_inside).sum() >= 0.95 * hidden_inside.sum()
        centre_owner = owner[scene][
            time, y.round().long().clamp(0, height - 1), x.round().long().clamp(0, width - 1)
        ]
        wrongly_visible = sample.visible & (centre_owner.long() > points.layers[None])
        assert wrongly_visible.sum() <= 0.02 * sample.visible.sum()


def test_points_cover_layers_and_query_frames_are_mostly_early(clean_batch):
    for points, layout_count in zip(clean_batch.points, clean_batch.layout.num_foreground):
        on_background = (points.layers == 0).float().mean()
        assert 0.1 < on_background < 0.6
        assert len(points.layers.unique()) >= min(3, layout_count + 1)
    query_frames = torch.cat([s.query_frames for s in clean_batch.samples])
    assert (query_frames <= 6).float().mean() > 0.6
    assert (query_frames > 6).any()


def test_effects_change_pixels_but_not_ground_truth():
    clean = SceneGenerator(small_config(effects=False, difficulty=1.0)).generate(21)
    degraded = SceneGenerator(small_config(effects=True, difficulty=1.0)).generate(21)
    assert torch.equal(clean.tracks, degraded.tracks)
    assert torch.equal(clean.visible, degraded.visible)
    assert (clean.video.float() - degraded.video.float()).abs().mean() > 1.0


def test_deformation_inverse_is_exact():
    generator = torch.Generator().manual_seed(0)
    fields = random_deformation_fields(2, generator)
    coefficients = 0.2 * (2 * torch.rand(2, 5, 2, generator=generator) - 1)
    per_frame = frame_fields(fields, coefficients)  # [2, 5, 2, G, G]
    undeformed = 1.8 * torch.rand(2, 5, 40, 2, generator=generator) - 0.9
    deformed = undeformed + sample_displacement(per_frame, undeformed)
    assert (deformed - undeformed).abs().max() > 1e-3  # the deformation does something
    recovered = invert_deformation(per_frame, deformed)
    assert (recovered - undeformed).abs().max() < 1e-5


def test_jpeg_artifacts_grow_as_quality_drops():
    generator = torch.Generator().manual_seed(1)
    images = (
        torch.rand(1, 3, 8, 8, generator=generator)
        .repeat_interleave(4, -1)
        .repeat_interleave(4, -2)
    )
    errors = [
        (jpeg_artifacts(images, torch.tensor([float(q)])) - images).abs().mean().item()
        for q in (95, 50, 10)
    ]
    assert errors[0] < errors[1] < errors[2]
    assert errors[0] < 0.03


def test_heldout_pickle_round_trip(tmp_path):
    config = small_config(effects=True, num_points=32)
    path = write_heldout_set(tmp_path / "heldout.pkl", 2, config, seed=7)
    with open(path, "rb") as handle:
        entries = pickle.load(handle)
    assert sorted(entries) == ["synthetic_7_0000", "synthetic_7_0001"]
    entry = entries["synthetic_7_0001"]
    assert entry["video"].dtype == np.uint8 and entry["video"].shape == (12, *SIZE, 3)
    assert entry["points"].dtype == np.float32 and entry["points"].shape == (32, 12, 2)
    assert entry["occluded"].dtype == bool and entry["occluded"].shape == (32, 12)
    from taptr.data.seeding import derive_seed

    sample = SceneGenerator(config).generate(derive_seed(7, 1))
    height, width = SIZE
    expected = (sample.tracks.numpy().transpose(1, 0, 2) + 0.5) / np.array([width, height])
    np.testing.assert_allclose(entry["points"], expected, atol=1e-6)
    np.testing.assert_array_equal(entry["occluded"], ~sample.visible.numpy().T)
    np.testing.assert_array_equal(entry["video"], sample.video.numpy())


def _write_texture_folder(root):
    """Three photos and two RGBA cut-outs with a real mask."""
    rng = np.random.default_rng(0)
    for index in range(3):
        photo = (rng.random((40, 60, 3)) * 255).astype(np.uint8)
        Image.fromarray(photo).save(root / f"photo_{index}.jpg")
    for index in range(2):
        rgba = (rng.random((50, 40, 4)) * 255).astype(np.uint8)
        rgba[..., 3] = 0
        rgba[10:40, 5:35, 3] = 255
        Image.fromarray(rgba).save(root / "objects" / f"thing_{index}.png")


def test_texture_folder_split_and_rendering(tmp_path):
    (tmp_path / "objects").mkdir()
    _write_texture_folder(tmp_path)
    everything = TextureLibrary.load(tmp_path, split="all")
    assert len(everything.backgrounds) == 3 and len(everything.cutouts) == 2
    assert everything.cutouts[0].shape == (4, 30, 30)  # cropped to the mask
    names = everything.background_names + everything.cutout_names
    splits = {name: texture_split(name) for name in names}
    assert splits == {name: texture_split(name) for name in names}  # deterministic
    for split in ("train", "heldout"):
        expected = sorted(n for n in names if splits[n] == split)
        try:
            part = TextureLibrary.load(tmp_path, split=split)
        except TaptrError:
            assert not expected
            continue
        assert sorted(part.background_names + part.cutout_names) == expected
    # texture_split buckets by the file name only, ~10% held out
    many = [texture_split(f"image_{i}.jpg") for i in range(2000)]
    assert 0.07 < many.count("heldout") / len(many) < 0.13
    sample = SceneGenerator(
        small_config(photo_probability=1.0, cutout_probability=1.0), everything
    ).generate(2)
    sample.check()


def test_missing_texture_folder_is_a_user_error(tmp_path):
    with pytest.raises(TaptrError):
        TextureLibrary.load(tmp_path / "nope")
    with pytest.raises(TaptrError):
        SceneConfig(difficulty=2.0)


def test_texture_fetch_keeps_photos_only(tmp_path):
    """The package rules pick the largest photo of each wallpaper, skip abstract art and
    clip art; no download involved."""
    from taptr.data.scenes.texture_fetch import PHOTO_PACKAGES, looks_like_photo_cutout, select_files

    rules = {package.name: package for package in PHOTO_PACKAGES}
    root = tmp_path / "plasma"
    for name, sizes in (("Path", (640, 1920)), ("Opal", (800,))):  # Opal: a render
        folder = root / "usr/share/wallpapers" / name / "contents/images"
        folder.mkdir(parents=True)
        for width in sizes:
            (folder / f"{width}x480.jpg").write_bytes(b"x" * width)
    kept = select_files(root, rules["plasma-workspace-wallpapers"])
    assert [path.name for path in kept] == ["1920x480.jpg"]
    stamps = tmp_path / "stamps"
    for relative in ("animals/birds/owl.png", "symbols/letter_a.png", "town/cartoon/house.png"):
        (stamps / "usr/share/tuxpaint/stamps" / relative).parent.mkdir(parents=True, exist_ok=True)
        (stamps / "usr/share/tuxpaint/stamps" / relative).write_bytes(b"")
    kept = select_files(stamps, rules["tuxpaint-stamps-default"])
    assert [path.name for path in kept] == ["owl.png"]
    rng = np.random.default_rng(0)
    photo = (rng.random((80, 80, 4)) * 255).astype(np.uint8)
    photo[..., 3] = 255
    photo[:20, :, 3] = 0
    clip_art = photo.copy()
    clip_art[..., :3] = [200, 30, 30]  # one flat colour
    assert looks_like_photo_cutout(photo) and not looks_like_photo_cutout(clip_art)
