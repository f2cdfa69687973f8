"""Our additions for learning on a CPU: the local correlation update, the tracking
initialisation (the untrained model tracks), the curriculum, validation curves, --max-minutes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from taptr import get_preset
from taptr.data.sample import TrackingSample
from taptr.models import TrackingOptions, build_model
from taptr.models.additions.correlation import LocalCorrelation, window_offsets
from taptr.training.curves import baseline_scores, curve_table
from taptr.distributed import DistributedContext
from taptr.training.sources import DifficultyRamp
from taptr.training.config import TrainConfig
from taptr.training.trainer import Trainer

CPU = DistributedContext(device=torch.device("cpu"))


def translated_texture(frames: int, size: int, velocity: tuple[float, float],
                       seed: int = 0) -> torch.Tensor:
    """[T, 3, size, size] in [0, 1]: a smooth random texture sliding by `velocity` px/frame."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 8 + 8, size // 8 + 8, generator=generator)
    texture = F.interpolate(coarse, size=(2 * size, 2 * size), mode="bicubic",
                            align_corners=False)
    out = []
    for t in range(frames):
        # Half of the texture is in view; shifting the grid by d/size moves content by -d px.
        theta = torch.tensor([[[0.5, 0.0, velocity[0] * t / size],
                               [0.0, 0.5, velocity[1] * t / size]]])
        grid = F.affine_grid(theta, (1, 3, size, size), align_corners=False)
        out.append(F.grid_sample(texture, grid, align_corners=False))
    return torch.cat(out)


@pytest.mark.parametrize("velocity", [(2.0, 1.0), (-1.0, 2.5)])
def test_the_untrained_small_model_follows_a_translated_texture(velocity):
    """Step-0 behaviour of `init_for_tracking` (even with a random backbone)."""
    frames, size = 16, 128
    torch.manual_seed(0)
    model = build_model(get_preset("small").replace(input_size=(size, size))).eval()
    video = (translated_texture(frames, size, velocity) - 0.45) / 0.25
    axis = torch.linspace(0.35, 0.65, 4)
    queries = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(1, 16, 2)
    with torch.no_grad():
        output = model(video[None], queries, torch.zeros(1, 16, dtype=torch.long))
    motion = -torch.tensor(velocity) * torch.arange(frames)[:, None]  # [T, 2] pixels
    truth = queries[0][None] * size + motion[:, None]  # [T, N, 2]
    tracked_error = (output.positions[0] * size - truth).norm(dim=-1)[-1].median()
    still_error = (queries[0][None] * size - truth).norm(dim=-1)[-1].median()
    assert still_error > 25
    assert tracked_error < 0.2 * still_error, (tracked_error, still_error)
    # A point followed on clean texture matches its template: called visible.
    assert float((output.visibility[0] > 0.5).float().mean()) > 0.9


def test_correlation_update_finds_the_template_in_its_window():
    torch.manual_seed(1)
    height, width, channels = 12, 16, 32
    feature_map = F.normalize(torch.randn(1, channels, height, width), dim=1)
    correlation = LocalCorrelation([channels], radius=3, initial_scale=200.0)
    target = torch.tensor([9.0, 5.0])  # level pixel (x, y)
    template = feature_map[0, :, 5, 9][None, None]  # [1, 1, C]
    start = (target + torch.tensor([2.0, -1.0]) + 0.5) / torch.tensor([width, height])
    moved, visibility = correlation.update(start[None, None], [feature_map], [template])
    found = moved[0, 0] * torch.tensor([width, height]) - 0.5
    assert torch.allclose(found, target, atol=0.05), found
    assert visibility.shape == (1, 1) and float(visibility.detach().abs().max()) == 0.0  # zero residual at init


def test_window_offsets_cover_the_square_row_major():
    offsets = window_offsets(1)
    assert offsets.tolist() == [[-1, -1], [0, -1], [1, -1], [-1, 0], [0, 0], [1, 0],
                                [-1, 1], [0, 1], [1, 1]]


def test_the_paper_preset_has_no_additions():
    config = get_preset("taptrv2")
    assert config.correlation_stages == () and config.initialisation == "detr"
    tiny = build_model("tiny")
    assert "correlation" not in tiny.hooks
    assert not any("correlation" in name for name in tiny.state_dict())


@pytest.mark.parametrize("template_update", [0.0, 0.25])
def test_stream_with_correlation_equals_offline(template_update):
    config = get_preset("tiny").replace(correlation_stages=(2, 1), initialisation="tracking")
    torch.manual_seed(3)
    model = build_model(config, TrackingOptions(template_update=template_update)).eval()
    with torch.no_grad():  # a soft softmax: on noise video, sharp ones turn rounding into ties
        model.hooks["correlation"].log_scale.fill_(3.0)
    generator = torch.Generator().manual_seed(4)
    frames = 14
    video = torch.randn(1, frames, 3, *config.input_size, generator=generator)
    points = torch.rand(1, 5, 2, generator=generator)
    query_frames = torch.tensor([[0, 2, 5, 9, 0]])
    with torch.no_grad():
        offline = model(video, points, query_frames)
        stream = model.stream(points, query_frames, num_frames=frames)
        chunks = [stream.push(video[:, t:t + 1]) for t in range(frames)] + [stream.finish()]
        assert len(stream.extras) <= config.window_size + config.window_stride
        late = model.stream(points[:, :3], query_frames[:, :3], num_frames=frames)
        late.push(video[:, :7])
        late.add_queries(points[:, 3:4], torch.tensor([[9]]))  # a template read mid-stream
        tail = [late.push(video[:, 7:]), late.finish()]
        reference = model(video, points[:, :4], torch.tensor([[0, 2, 5, 9]]))
    streamed = torch.cat([c.positions for c in chunks if c is not None], 1)
    # The sharp correlation softmax amplifies float rounding of differently batched convs.
    assert torch.allclose(streamed, offline.positions, atol=1e-4)
    tail = torch.cat([c.positions for c in tail if c is not None], 1)
    assert torch.allclose(tail[:, :, 3], reference.positions[:, -tail.shape[1]:, 3], atol=1e-4)


def test_difficulty_ramp_rises_linearly_then_holds():
    ramp = DifficultyRamp(0.2, 0.6, clips=100)
    assert ramp(0) == pytest.approx(0.2) and ramp(50) == pytest.approx(0.4)
    assert ramp(100) == pytest.approx(0.6) and ramp(10_000) == pytest.approx(0.6)
    assert DifficultyRamp(0.2, 0.6, clips=0)(0) == pytest.approx(0.6)


def still_sample(frames: int = 6, points: int = 5) -> TrackingSample:
    generator = torch.Generator().manual_seed(0)
    video = (torch.rand(frames, 32, 48, 3, generator=generator) * 255).to(torch.uint8)
    tracks = (torch.rand(points, 2, generator=generator) * torch.tensor([40.0, 24.0]) + 4)
    return TrackingSample(video=video, tracks=tracks[None].repeat(frames, 1, 1),
                          visible=torch.ones(frames, points, dtype=torch.bool),
                          query_frames=torch.zeros(points, dtype=torch.long), name="still")


def test_baselines_score_a_still_scene_perfectly():
    scores = baseline_scores([still_sample()], trackers=("static",))
    assert scores["static"]["AJ"] == pytest.approx(1.0)
    assert scores["static"]["OA"] == pytest.approx(1.0)


def tiny_run(tmp_path, **changes) -> TrainConfig:
    """A 50-step run of the tiny preset; changes as section__key=value."""
    config = TrainConfig().override([
        "model.preset=tiny", f"run.out={tmp_path / 'run'}", "run.steps=50",
        "data.clip_length=8", "data.num_points=8", "optim.warmup_steps=1", "eval.every=0",
        "run.log_every=1", "run.ckpt_every=1000", "run.export_every=1000",
        "run.progress=false", "run.device=cpu", "data.curriculum_steps=0"])
    return config.replace(**changes)


class StillClips:
    def __call__(self, index: int) -> TrackingSample:
        return still_sample(frames=8, points=8)


def test_max_minutes_stops_with_a_checkpoint_an_export_and_a_last_evaluation(tmp_path):
    sets = {"easy": [still_sample(frames=8)], "medium": [still_sample(frames=8)]}
    trainer = Trainer(tiny_run(tmp_path, run__max_minutes=1e-4, eval__every=1000),
                      clip_source=StillClips(), eval_samples=sets, context=CPU)
    result = trainer.run()
    assert 1 <= result.step < 50 and not result.interrupted
    assert "easy_AJ" in result.last_eval
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[-1].split(",")[0] == str(result.step) and rows[-1].count(",,") < 20
    assert (tmp_path / "run" / "last.pt").is_file()
    assert (tmp_path / "run" / "ema.safetensors").is_file()


def test_max_minutes_on_the_command_line(tmp_path, capsys):
    from taptr.cli import main as cli_main

    code = cli_main(["train", "--preset", "tiny", "--out", str(tmp_path / "cli"), "--steps", "50",
                     "--set", "data.clip_length=8", "--set", "data.num_points=8",
                     "--set", "eval.every=0", "--set", "data.curriculum_steps=0",
                     "--max-minutes", "0.0001", "--no-progress", "--device", "cpu"])
    assert code == 0
    assert "done: step" in capsys.readouterr().out
    assert (tmp_path / "cli" / "ema.safetensors").is_file()


def test_validation_curve_rows_and_table(tmp_path):
    sets = {"easy": [still_sample()], "medium": [still_sample()]}
    config = tiny_run(tmp_path, run__steps=2, eval__every=2)
    trainer = Trainer(config, clip_source=StillClips(), eval_samples=sets, context=CPU)
    result = trainer.run()
    assert {"AJ", "easy_AJ", "medium_AJ"} <= set(result.last_eval)
    (tmp_path / "run" / "baselines.json").write_text(json.dumps(
        {name: {"static": {"AJ": 1.0}} for name in sets}))
    table = curve_table(tmp_path / "run")
    lines = table.strip().splitlines()
    assert lines[0].startswith("| step | CPU min | clips | AJ easy | AJ medium |")
    assert lines[2].startswith("| static |")
    assert [line.split("|")[1].strip() for line in lines[3:]] == ["0", "2"]


def test_window_patches_equal_patches_read_one_by_one():
    from reference_correlation import patch_descriptors

    from taptr.models.additions.correlation import window_patch_descriptors

    generator = torch.Generator().manual_seed(2)
    image = torch.randn(2, 3, 20, 24, generator=generator)
    anchors = torch.rand(2, 5, 2, generator=generator)
    radius, patch = 2, 1
    fast = window_patch_descriptors(image, anchors, radius, patch)
    size = torch.tensor([24.0, 20.0])
    locations = anchors[:, :, None, :] + window_offsets(radius) / size
    slow = patch_descriptors(image, locations, patch)
    assert fast.shape == (2, 5, 25, 27)
    assert torch.allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("vertex", [(0.3, -0.2), (-1.4, 2.25), (0.0, 0.0)])
def test_peak_subpixel_finds_the_vertex_of_a_paraboloid(vertex):
    from taptr.models.additions.correlation import peak_subpixel

    offsets = window_offsets(3)
    scores = -((offsets - torch.tensor(vertex)) ** 2).sum(-1)  # peak exactly at `vertex`
    found = peak_subpixel(scores[None], radius=3)[0]
    assert torch.allclose(found, torch.tensor(vertex), atol=1e-5), found


def test_window_ncc_equals_the_dot_products_of_materialised_patches():
    from taptr.models.additions.correlation import window_ncc, window_patch_descriptors

    generator = torch.Generator().manual_seed(5)
    image = torch.randn(2, 3, 20, 24, generator=generator)
    anchors = torch.rand(2, 4, 2, generator=generator)
    template = window_patch_descriptors(image, torch.rand(2, 4, 2, generator=generator), 0, 2)
    template = template[:, :, 0]
    patches = window_patch_descriptors(image, anchors, 3, 2)
    expected = (patches * template[:, :, None]).sum(-1)
    assert torch.allclose(window_ncc(image, anchors, template, 3, 2), expected, atol=1e-5)
    from taptr.models.kernels import correlation_ops

    by_convolution = window_ncc(image, anchors, template, 3, 2, correlation_ops("inference"))
    assert torch.allclose(by_convolution, expected, atol=1e-5)


def test_templates_refresh_only_where_a_point_is_updated_and_visible():
    from taptr.models.taptrv2.windows import FrameState

    from taptr.models.additions.correlation_update import refreshed_templates

    config = get_preset("tiny").replace(correlation_stages=(1,), correlation_patch=2,
                                        initialisation="tracking")
    model = build_model(config).eval()
    hook = model.hooks["correlation"]
    height, width = config.input_size
    frame = translated_texture(1, max(height, width), (0.0, 0.0), seed=9)[:, :, :height, :width]
    with torch.no_grad():
        maps = model.encode(frame).extras["correlation"]
        first_points = torch.tensor([[[0.3, 0.3], [0.5, 0.5], [0.7, 0.4], [0.4, 0.7]]])
        now = first_points + torch.tensor([1.0 / width, 0.0])  # one pixel to the right
        initial = hook.templates(maps, first_points)
        current = [t.flip(1) for t in initial]  # as left by some earlier refresh
        logits = torch.cat((torch.logit(now), torch.zeros_like(now)), -1)
        logits = logits[None].expand(config.decoder_layers, -1, -1, -1)
        vis = torch.zeros(config.decoder_layers, 1, 4, 3)
        vis[-1, 0, :, 1] = torch.tensor([3.0, -3.0, 3.0, 3.0])  # point 1 is occluded
        tail = FrameState(logits, logits, vis, torch.zeros(1, 4, config.hidden_dim))
        updated = torch.tensor([[True, True, False, True]])  # point 2 starts later
        refreshed = refreshed_templates(hook, current, initial, maps, tail, updated, 0.25)
        recent = hook.templates(maps, now)
    for level, (new, old, first, seen) in enumerate(zip(refreshed, current, initial, recent)):
        expected = F.normalize(0.75 * first + 0.25 * seen, dim=-1)
        assert torch.allclose(new[0, [0, 3]], expected[0, [0, 3]], atol=1e-5), level
        assert torch.equal(new[0, [1, 2]], old[0, [1, 2]]), level


def test_flat_patches_correlate_zero_not_plus_or_minus_one():
    """Outside the image the padding is constant: those patches have no texture, so their NCC
    is 0. (Before PATCH_MIN_NORM, rounding residues divided by a 1e-12 norm gave +-1 there,
    and points near the border jumped outside.)"""
    from taptr.models.additions.correlation import window_ncc, window_patch_descriptors

    generator = torch.Generator().manual_seed(6)
    image = torch.randn(1, 3, 64, 64, generator=generator) + 1.7
    template = window_patch_descriptors(image, torch.tensor([[[0.3, 0.5]]]), 0, 4)[:, :, 0]
    border = window_ncc(image, torch.tensor([[[0.99, 0.5]]]), template, 10, 4).view(21, 21)
    # Offsets dx >= 6 put the whole patch right of the image (x > 63.5): in the zero padding.
    assert border[:, 16:].abs().max() < 1e-2
    flat_image = torch.full_like(image, 0.9)
    inside_flat = window_ncc(flat_image, torch.tensor([[[0.5, 0.5]]]), template, 10, 4)
    assert inside_flat.abs().max() < 1e-3  # every patch lies in a flat area
    flat_template = window_patch_descriptors(flat_image, torch.tensor([[[0.5, 0.5]]]), 0,
                                             4)[:, :, 0]
    assert flat_template.norm() < 1e-3  # a flat query patch is no template


def test_every_correlation_level_gets_a_gradient_from_the_final_position():
    torch.manual_seed(6)
    correlation = LocalCorrelation([8], radius=2, pixel_patch=1, pixel_radius=2)
    image = torch.randn(1, 3, 24, 24)
    feature_map = F.normalize(torch.randn(1, 8, 6, 6), dim=1)
    maps = [feature_map, image]
    points = torch.rand(1, 5, 2) * 0.5 + 0.25
    templates = correlation.templates(maps, points + 0.02)
    moved, _ = correlation.update(points, maps, templates)
    moved.sum().backward()
    assert float(correlation.log_scale.grad[0].abs()) > 0  # the coarse level learns too
    assert correlation.residual[0][2].weight.grad[:2].abs().sum() > 0
    assert correlation.residual[1][2].weight.grad[:2].abs().sum() > 0


def test_bf16_autocast_keeps_the_correlation_precise():
    """The correlation runs in float32 under autocast: bf16 tracks stay near fp32 ones."""
    import numpy as np

    from taptr import Tracker

    torch.manual_seed(0)
    model = build_model(get_preset("small").replace(input_size=(128, 128)))
    frames = translated_texture(12, 128, (2.0, 1.0)).permute(0, 2, 3, 1).numpy()
    frames = (frames * 255).astype(np.uint8)
    queries = np.array([[0, 50, 50], [0, 70, 60]], np.float32)
    full = Tracker(model).track(frames, queries=queries, progress=False).tracks
    half = Tracker(model, dtype=torch.bfloat16).track(frames, queries=queries,
                                                       progress=False).tracks
    assert np.abs(full - half).max() < 1.0
    np.testing.assert_allclose(full[:, -1], [[28, 39], [48, 49]], atol=1.5)  # moved (-2, -1)/frame


def test_the_position_before_the_correlation_update_is_trained_through_it():
    """Gradient reaches what produced the incoming position (APU, position head)."""
    torch.manual_seed(7)
    correlation = LocalCorrelation([8], radius=2, pixel_patch=1, pixel_radius=2)
    maps = [F.normalize(torch.randn(1, 8, 6, 6), dim=1), torch.randn(1, 3, 24, 24)]
    points = (torch.rand(1, 3, 2) * 0.5 + 0.25).requires_grad_(True)
    templates = correlation.templates(maps, points.detach() + 0.02)
    moved, _ = correlation.update(points, maps, templates)
    moved.sum().backward()
    assert torch.allclose(points.grad, torch.ones_like(points))


def test_point_chunks_give_the_same_correlation_result():
    config = get_preset("tiny").replace(correlation_stages=(2, 1), correlation_patch=1,
                                        initialisation="tracking")
    torch.manual_seed(8)
    model = build_model(config).eval()
    with torch.no_grad():
        model.hooks["correlation"].log_scale.fill_(3.0)
    generator = torch.Generator().manual_seed(9)
    video = torch.randn(1, 10, 3, *config.input_size, generator=generator)
    points = torch.rand(1, 7, 2, generator=generator)
    frames = torch.tensor([[0, 1, 2, 3, 0, 5, 0]])
    with torch.no_grad():
        whole = model(video, points, frames, point_chunk=1000)
        chunked = model(video, points, frames, point_chunk=2)
    assert torch.allclose(whole.positions, chunked.positions, atol=1e-4)
    # Visibility adds peak_gain (10) x the best NCC: float rounding of batched products that
    # differ with the chunk size, times 10.
    assert torch.allclose(whole.vis_logits, chunked.vis_logits, atol=1e-3)


def test_window_sampling_from_crops_equals_grid_sample_everywhere():
    """`sample_window` and `window_cosine` (integer crops blended once) give `sample_map`'s
    values and gradients, for anchors inside, on the border and far outside the map."""
    from taptr.models.additions.correlation import sample_map, sample_window, window_cosine

    generator = torch.Generator().manual_seed(11)
    radius = 3
    anchors = torch.tensor([[[0.5, 0.5], [0.013, 0.97], [0.0, 1.0], [-0.2, 0.4], [1.3, 1.6],
                             [-5.0, 7.0], [0.999, 0.001]]]).repeat(2, 1, 1)
    anchors[1] += 0.0371
    for height, width in ((9, 13), (16, 7)):
        feature_map = torch.randn(2, 5, height, width, generator=generator, requires_grad=True)
        offsets = window_offsets(radius) / torch.tensor([width, height])
        expected = sample_map(feature_map, anchors[:, :, None] + offsets)
        window = sample_window(feature_map, anchors, radius)
        assert torch.allclose(window, expected, atol=1e-5)
        assert expected[0, 5].abs().max() == 0  # far outside: zeros
        templates = torch.randn(2, anchors.shape[1], 5, generator=generator)
        cosine = window_cosine(feature_map, anchors, templates, radius)
        assert torch.allclose(cosine, (expected * templates[:, :, None]).sum(-1), atol=1e-5)
        expected_grad, = torch.autograd.grad(expected.sin().sum(), feature_map)
        window_grad, = torch.autograd.grad(window.sin().sum(), feature_map)
        assert torch.allclose(window_grad, expected_grad, atol=1e-5)
