"""The network beyond the official cases: any T, any B, streaming, chunking, non-square maps."""

from __future__ import annotations

import math

import pytest
import torch

from taptr import get_preset
from taptr.models import build_model, window_starts
from taptr.models.taptrv2.decoder import DecoderLayer, WindowInputs
from taptr.models.taptrv2.levels import LevelLayout


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).eval()
    # Larger random heads so positions actually move.
    with torch.no_grad():
        for head in model.decoder.position_heads:
            head.layers[-1].weight.normal_(0, 0.1)
    return model


def random_inputs(batch, frames, points, seed=0, size=(64, 96)):
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, frames, 3, *size, generator=generator)
    query_points = torch.rand(batch, points, 2, generator=generator)
    query_frames = torch.randint(0, frames, (batch, points), generator=generator)
    return video, query_points, query_frames


def test_window_schedule_matches_the_official_examples():
    assert window_starts(24, 8, 4) == [0, 4, 8, 12, 16]
    assert window_starts(10, 8, 4) == [0, 2]
    starts = window_starts(50, 8, 4)
    assert len(starts) == 12 and starts[-1] == 42
    assert window_starts(5, 8, 4) == [0]


@pytest.mark.parametrize("frames", [1, 3, 7, 8, 13])
def test_any_number_of_frames(tiny_model, frames):
    video, points, query_frames = random_inputs(1, frames, 6)
    with torch.no_grad():
        output = tiny_model(video, points, query_frames)
    assert output.positions.shape == (1, frames, 6, 2)
    assert torch.isfinite(output.positions).all()
    # At and before the query frame: the query itself and logits [0, 1, 0].
    for n in range(6):
        start = int(query_frames[0, n])
        assert torch.allclose(output.positions[0, :start + 1, n], points[0, n].clamp(1e-3, 1 - 1e-3).expand(start + 1, 2), atol=1e-5)
        assert torch.equal(output.vis_logits[0, :start + 1, n],
                           torch.tensor([0.0, 1.0, 0.0]).expand(start + 1, 3))


def test_batch_equals_each_video_alone(tiny_model):
    video, points, query_frames = random_inputs(3, 11, 7, seed=1)
    with torch.no_grad():
        batched = tiny_model(video, points, query_frames)
        for b in range(3):
            alone = tiny_model(video[b:b + 1], points[b:b + 1], query_frames[b:b + 1])
            assert torch.allclose(batched.positions[b:b + 1], alone.positions, atol=1e-5)
            assert torch.allclose(batched.vis_logits[b:b + 1], alone.vis_logits, atol=1e-5)


def test_point_chunks_give_the_same_result(tiny_model):
    video, points, query_frames = random_inputs(1, 10, 9, seed=2)
    with torch.no_grad():
        whole = tiny_model(video, points, query_frames, point_chunk=1000)
        chunked = tiny_model(video, points, query_frames, point_chunk=2)
    assert torch.allclose(whole.positions, chunked.positions, atol=1e-5)


def test_stream_without_length_matches_offline_before_the_last_window(tiny_model):
    frames = 18
    video, points, query_frames = random_inputs(1, frames, 5, seed=3)
    with torch.no_grad():
        offline = tiny_model(video, points, query_frames)
        stream = tiny_model.stream(points, query_frames)
        chunks = [stream.push(video[:, t:t + 1]) for t in range(frames)] + [stream.finish()]
    chunks = [c for c in chunks if c is not None]
    streamed = torch.cat([c.positions for c in chunks], 1)
    assert streamed.shape == offline.positions.shape
    # Windows [0-7] .. [8-15] are shared; the offline end-aligned window [10-17] revises 10+.
    assert torch.allclose(streamed[:, :10], offline.positions[:, :10], atol=1e-5)
    # Frames are released as soon as final: never more than a window (+ a stride) held.
    assert len(stream.memory) <= tiny_model.config.window_size


def test_stream_with_length_equals_offline_and_frees_memory(tiny_model):
    frames = 17
    video, points, query_frames = random_inputs(1, frames, 4, seed=4)
    with torch.no_grad():
        offline = tiny_model(video, points, query_frames)
        stream = tiny_model.stream(points, query_frames, num_frames=frames)
        chunks, held = [], []
        for t in range(frames):
            chunks.append(stream.push(video[:, t:t + 1]))
            held.append(len(stream.memory))
        chunks.append(stream.finish())
    streamed = torch.cat([c.positions for c in chunks if c is not None], 1)
    assert torch.allclose(streamed, offline.positions, atol=1e-6)
    assert max(held) <= tiny_model.config.window_size + tiny_model.config.window_stride


def test_queries_added_mid_stream(tiny_model):
    video, points, query_frames = random_inputs(1, 12, 4, seed=5)
    query_frames = torch.tensor([[0, 0, 6, 6]])
    with torch.no_grad():
        offline = tiny_model(video, points, query_frames)
        stream = tiny_model.stream(points[:, :2], query_frames[:, :2], num_frames=12)
        stream.push(video[:, :7])
        stream.add_queries(points[:, 2:], query_frames[:, 2:])
        rest = stream.push(video[:, 7:])
        last = stream.finish()
    tail = torch.cat([c.positions for c in (rest, last) if c is not None], 1)
    assert torch.allclose(tail, offline.positions[:, -tail.shape[1]:], atol=1e-5)


def coordinate_memory(layout: LevelLayout, channels: int) -> torch.Tensor:
    """Memory [1, S, C] whose channel 0 holds each token's x and channel 1 its y (level pixels)."""
    tokens = []
    for height, width in layout.shapes:
        ys, xs = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)),
                                indexing="ij")
        level = torch.zeros(height * width, channels)
        level[:, 0], level[:, 1] = xs.flatten(), ys.flatten()
        tokens.append(level)
    return torch.cat(tokens)[None]


@pytest.mark.parametrize("shapes", [[(6, 14), (3, 7)], [(14, 6), (7, 3)]])
def test_query_initialisation_reads_the_query_position(shapes):
    config = get_preset("tiny").replace(num_levels=2, backbone_stages=(2, 3))
    model = build_model(config)
    model.query_initializer = torch.nn.Identity()
    layout = LevelLayout.from_shapes(shapes)
    memory = coordinate_memory(layout, config.hidden_dim)
    points = torch.tensor([[[0.25, 0.75], [1.0, 0.0], [0.6, 0.4]]])
    features = model.query_features(memory, layout, points)  # [1, N, L*C]
    for level, (height, width) in enumerate(shapes):
        read = features[0, :, level * config.hidden_dim:level * config.hidden_dim + 2]
        expected = points[0] * torch.tensor([width - 1.0, height - 1.0])
        assert torch.allclose(read, expected, atol=1e-5)


@pytest.mark.parametrize("shapes", [[(6, 14), (3, 7)], [(14, 6), (7, 3)]])
@pytest.mark.parametrize("chosen", [0, 5])
def test_apu_moves_the_point_to_the_sampled_location(shapes, chosen):
    """With all APU weight on one sample, the point moves exactly where that sample was read."""
    dim, heads, levels, points_per = 8, 2, 2, 2
    layer = DecoderLayer(dim, 16, heads, levels, points_per, ("ca", "tsa", "sa", "ffn"))
    offsets = torch.randn(heads * levels * points_per * 2)
    with torch.no_grad():
        layer.cross_attn.sampling_offsets.weight.zero_()
        layer.cross_attn.sampling_offsets.bias.copy_(offsets)
        layer.caupdate_weight_regressor[0].weight.zero_()
        bias = torch.full((heads * levels * points_per,), -100.0)
        bias[chosen] = 100.0
        layer.caupdate_weight_regressor[0].bias.copy_(bias)
    layout = LevelLayout.from_shapes(shapes)
    memory = coordinate_memory(layout, dim)
    reference = torch.tensor([[[[0.4, 0.55, 0.5, 0.5]]]])  # [B, W, N, 4]
    flags = torch.ones(1, 1, 1, dtype=torch.bool)
    inputs = WindowInputs(torch.zeros(1, 1, 1, dim), reference, memory, flags, flags, layout)
    _, moved, displacement = layer._cross_attention(
        torch.zeros(1, 1, 1, dim), torch.zeros(1, 1, 1, dim), reference, inputs, None)
    head, rest = divmod(chosen, levels * points_per)
    level = rest // points_per
    height, width = shapes[level]
    offset = offsets.view(heads, levels, points_per, 2).flatten(0, 2)[chosen]
    expected = reference[0, 0, 0, :2] + offset / torch.tensor([width, height])
    assert torch.allclose(moved[0, 0, 0, :2], expected, atol=1e-5)
    assert torch.allclose(displacement[0, 0, 0], expected - reference[0, 0, 0, :2], atol=1e-5)
    # The sample the point moved to reads exactly that location on the coordinate map.
    read_x = expected[0] * width - 0.5
    assert 0 <= read_x <= width - 1


def test_same_group_mask_is_none_only_for_uniform_flags_in_the_fast_kernels():
    from taptr.models.kernels import mask_unless_uniform
    from taptr.models.taptrv2.attention import MultiheadAttention
    from taptr.models.taptrv2.ops import same_group_mask

    uniform = torch.tensor([[True, True, True], [False, False, False]])
    mixed = torch.tensor([[True, False, True], [False, False, False]])
    assert mask_unless_uniform(uniform) is None
    assert same_group_mask(uniform).all()  # the reference (and export) keeps the mask
    for mask in (same_group_mask, mask_unless_uniform):
        assert mask(mixed).tolist()[0] == [[True, False, True], [False, True, False],
                                           [True, False, True]]
    torch.manual_seed(0)
    attention = MultiheadAttention(8, 2).eval()
    tokens = torch.randn(2, 3, 8)
    full = torch.ones(2, 3, 3, dtype=torch.bool)
    assert torch.allclose(attention(tokens, tokens, None), attention(tokens, tokens, full),
                          atol=1e-6)


def test_point_sine_embedding_follows_the_official_formula():
    from taptr.models.taptrv2.position_encoding import point_sine_embedding

    points = torch.tensor([[0.25, 0.75, 0.1, 0.4]])
    embedding = point_sine_embedding(points, 8, temperature=10.0)
    expected = []
    for coordinate in (points[0, 1], points[0, 0], points[0, 2], points[0, 3]):  # y, x, w, h
        for k in range(8):
            angle = 2 * math.pi * coordinate / 10.0 ** (2 * (k // 2) / 8)
            expected.append(math.sin(angle) if k % 2 == 0 else math.cos(angle))
    assert torch.allclose(embedding[0], torch.tensor(expected), atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        point_sine_embedding(points, 7)
