"""The packed-canvas deformable attention equals the slow reference with both samplings
(the fast kernels' row gathers, `taptr.models.kernels.sampling`, and the paper package's
`grid_sample` reference, `taptr.models.taptrv2.ops`), in values and gradients, and samples the
right pixels on non-square maps."""

from __future__ import annotations

import pytest
import torch

from reference_deformable import (reference_deformable_attention,
                                  reference_key_aware_attention)
from taptr.errors import TaptrError
from taptr.models import build_model
from taptr.models.kernels import use_kernels
from taptr.models.kernels.sampling import gather_deformable_attention, gather_key_aware_attention
from taptr.models.taptrv2 import ops
from taptr.models.taptrv2.levels import LevelLayout, pack_levels, sample_packed

SAMPLING = ("gather", "grid_sample")  # the fast kernel, the reference


def deformable_attention(*args, sampling: str, **kwargs):
    kernel = gather_deformable_attention if sampling == "gather" else ops.deformable_attention
    return kernel(*args, **kwargs)


def key_aware_attention(*args, sampling: str, **kwargs):
    kernel = gather_key_aware_attention if sampling == "gather" else ops.key_aware_attention
    return kernel(*args, **kwargs)

SHAPES = [
    [(6, 9), (3, 5), (2, 2)],      # wider than tall, odd sizes
    [(9, 4), (5, 2), (3, 1)],      # taller than wide
    [(7, 7)],                      # one square level
]


def random_case(shapes, seed, batch=2, queries=5, heads=2, points=3, dim=4, spread=0.3):
    generator = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in shapes)
    values = torch.randn(batch, tokens, heads, dim, generator=generator)
    # Locations around and well outside [0, 1] (border handling).
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=generator)
    locations = locations * (1 + 2 * spread) - spread
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=generator)
    return values, locations, weights


@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_standard_attention_matches_reference(shapes, seed, sampling):
    values, locations, weights = random_case(shapes, seed)
    layout = LevelLayout.from_shapes(shapes)
    fast = deformable_attention(values, layout, locations, weights, sampling=sampling)
    slow = reference_deformable_attention(values, shapes, locations, weights)
    assert torch.allclose(fast.double(), slow, atol=1e-5)
    chunked = deformable_attention(values, layout, locations, weights, query_chunk=2,
                                   sampling=sampling)
    assert torch.allclose(chunked, fast, atol=1e-6)


def key_aware_case(shapes, seed=3):
    values, locations, _ = random_case(shapes, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    keys = torch.randn(values.shape, generator=generator)
    queries = torch.randn(values.shape[0], locations.shape[1], *values.shape[2:],
                          generator=generator)
    return queries, keys, values, locations


@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("shapes", SHAPES)
def test_key_aware_attention_matches_reference(shapes, sampling):
    queries, keys, values, locations = key_aware_case(shapes)
    layout = LevelLayout.from_shapes(shapes)
    fast_out, fast_logits = key_aware_attention(queries, keys, values, layout, locations,
                                                query_chunk=3, sampling=sampling)
    slow_out, slow_logits = reference_key_aware_attention(queries, keys, values, shapes, locations)
    assert torch.allclose(fast_out.double(), slow_out, atol=1e-5)
    assert torch.allclose(fast_logits.double(), slow_logits, atol=1e-5)


@pytest.mark.parametrize("shapes", SHAPES[:2])
def test_both_samplings_give_the_same_gradients(shapes):
    """Training runs on 'gather': its gradients w.r.t. queries, keys, values and locations
    equal those of grid_sample's."""
    layout = LevelLayout.from_shapes(shapes)
    gradients = {}
    for sampling in SAMPLING:
        inputs = [t.clone().requires_grad_() for t in key_aware_case(shapes, seed=7)]
        out, logits = key_aware_attention(*inputs[:3], layout, inputs[3], sampling=sampling)
        (out.square().sum() + logits.sin().sum()).backward()
        gradients[sampling] = [t.grad for t in inputs]
    for gather, grid in zip(*gradients.values()):
        assert torch.allclose(gather, grid, atol=1e-4, rtol=1e-4)
        assert gather.abs().max() > 0


def test_unknown_kernels_are_refused():
    with pytest.raises(TaptrError, match="unknown kernels 'nearest'"):
        use_kernels(build_model("tiny"), "nearest")


@pytest.mark.parametrize("sampling", SAMPLING)
def test_points_exactly_on_and_beyond_the_border(sampling):
    shapes = [(4, 6), (2, 3)]
    values, _, _ = random_case(shapes, 5, batch=1, heads=1)
    edge = torch.tensor([-0.5 / 6, 0.0, 1 / 12, 1.0, 1 + 0.5 / 6, 1 + 1 / 6, 3.0, -2.0])
    locations = torch.stack(torch.meshgrid(edge, edge, indexing="ij"), -1).reshape(1, -1, 1, 1, 1, 2)
    locations = locations.expand(1, -1, 1, 2, 1, 2).contiguous()
    weights = torch.ones(1, locations.shape[1], 1, 2, 1)
    layout = LevelLayout.from_shapes(shapes)
    fast = deformable_attention(values, layout, locations, weights, sampling=sampling)
    slow = reference_deformable_attention(values, shapes, locations, weights)
    assert torch.allclose(fast.double(), slow, atol=1e-5)


@pytest.mark.parametrize("shapes", [[(5, 11), (3, 6)], [(12, 5), (6, 3)]])
def test_sampling_reads_the_intended_pixel_on_non_square_maps(shapes):
    """Maps whose channels hold their own (x, y): sampling (u, v) reads (u*W - 0.5, v*H - 0.5)."""
    tokens = []
    for height, width in shapes:
        ys, xs = torch.meshgrid(torch.arange(height.__float__()), torch.arange(float(width)),
                                indexing="ij")
        tokens.append(torch.stack((xs.flatten(), ys.flatten()), -1))
    values = torch.cat(tokens)[None, :, None, :]  # [1, S, 1, 2]
    layout = LevelLayout.from_shapes(shapes)
    canvas = pack_levels(values.flatten(2), layout, 1)
    points = torch.tensor([[0.3, 0.6], [0.5, 0.5], [0.8, 0.25]])
    locations = points[None, :, None, None, None, :].expand(1, 3, 1, 2, 1, 2)
    sampled = sample_packed(canvas, layout, locations)  # [1, 2, Q, L]
    for level, (height, width) in enumerate(shapes):
        expected_x = points[:, 0] * width - 0.5
        expected_y = points[:, 1] * height - 0.5
        assert torch.allclose(sampled[0, 0, :, level], expected_x, atol=1e-5)
        assert torch.allclose(sampled[0, 1, :, level], expected_y, atol=1e-5)


@pytest.mark.parametrize("sampling", SAMPLING)
def test_a_nan_location_gives_nan_not_an_error(sampling):
    values, locations, weights = random_case(SHAPES[0], 2)
    locations[0, 1, 0, 0, 0, 0] = float("nan")
    out = deformable_attention(values, LevelLayout.from_shapes(SHAPES[0]), locations, weights,
                               sampling=sampling)
    assert out[0, 1].isnan().any() and not out[1].isnan().any()


def test_standard_attention_gradients_agree_between_samplings():
    layout = LevelLayout.from_shapes(SHAPES[0])
    gradients = {}
    for sampling in SAMPLING:
        inputs = [t.clone().requires_grad_() for t in random_case(SHAPES[0], 9)]
        deformable_attention(*inputs[:1], layout, *inputs[1:], sampling=sampling).sin().sum(
        ).backward()
        gradients[sampling] = [t.grad for t in inputs]
    for gather, grid in zip(*gradients.values()):
        assert torch.allclose(gather, grid, atol=1e-4, rtol=1e-4)


def test_key_logits_stay_float32_under_autocast():
    queries, keys, values, locations = key_aware_case(SHAPES[0])
    layout = LevelLayout.from_shapes(SHAPES[0])
    results = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for sampling in SAMPLING:
            results[sampling] = key_aware_attention(queries.bfloat16(), keys.bfloat16(),
                                                    values.bfloat16(), layout, locations,
                                                    sampling=sampling)
    (gather_out, gather_logits), (grid_out, grid_logits) = results.values()
    assert gather_logits.dtype == grid_logits.dtype == torch.float32
    assert torch.allclose(gather_logits, grid_logits, atol=1e-4)
    assert torch.allclose(gather_out.float(), grid_out.float(), atol=1e-2)
