"""Every fast kernel (`taptr.models.kernels`) keeps the function of the plain math it replaces:
the attention samplings, softmax, FFN, mask, correlation crops and depthwise correlation, the
fused backbone blocks; and whole models give the same tracks under every kernel set."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from taptr.models import build_model
from taptr.models.additions.correlation import (REFERENCE_CORRELATION_OPS, gather_crops,
                                                sample_map, sample_window, window_indices,
                                                window_offsets, window_start)
from taptr.models.kernels import (KERNELS, correlation_ops, paper_ops, prepare_for_inference,
                                  use_kernels)
from taptr.models.kernels.backbone import FusedConv2d, fuse_backbone, fused_kernels_available
from taptr.models.kernels.correlation import _row_segments
from taptr.models.kernels.prepare import fold_frozen_batchnorm
from taptr.models.kernels.softmax import softmax_last
from taptr.models.taptrv2.attention import MultiheadAttention
from taptr.models.taptrv2.backbone import build_backbone
from taptr.models.taptrv2.levels import LevelLayout, pack_levels, pack_levels_rows
from taptr.models.taptrv2.ops import REFERENCE_OPS


def _randomise_norms(backbone: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in backbone.modules():
        if type(module).__name__ == "FrozenBatchNorm2d":
            count = module.weight.numel()
            module.weight.copy_(0.5 + torch.rand(count, generator=generator))
            module.bias.copy_(0.1 * torch.randn(count, generator=generator))
            module.running_mean.copy_(0.1 * torch.randn(count, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(count, generator=generator))


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "resnet50"])
def test_fused_backbone_gives_the_backbone_stages(name):
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    _randomise_norms(backbone, 1)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = backbone(images)
        folded = fold_frozen_batchnorm(copy.deepcopy(backbone)).to(
            memory_format=torch.channels_last)
        fused = fuse_backbone(folded)
        stages = fused(images.contiguous(memory_format=torch.channels_last))
    assert len(stages) == len(expected) == 4
    for got, want in zip(stages, expected):
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_fused_convolution_sums_the_residual_before_the_activation():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    inputs, residual = torch.randn(2, 4, 9, 7), torch.randn(2, 6, 9, 7)
    for activation, function in (("none", lambda x: x), ("relu", torch.relu),
                                 ("relu6", torch.nn.functional.relu6)):
        fused = FusedConv2d(conv, activation)
        with torch.no_grad():
            want = function(conv(inputs) + residual)
            assert torch.allclose(fused(inputs, residual), want, atol=1e-5)
            assert torch.allclose(fused(inputs), function(conv(inputs)), atol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        FusedConv2d(conv, "gelu")


def test_fused_blocks_are_chosen_for_cpu_float32_inference_only():
    """The choice is made once, when the model is prepared (not inside forward): fused blocks
    for a CPU in float32, plain (folded) convolutions under autocast or for another device."""
    model = build_model("tiny")

    def fused_count(prepared):
        return sum(isinstance(m, FusedConv2d) for m in prepared.modules())

    assert (fused_count(prepare_for_inference(model, "inference", "cpu")) > 0) == \
        fused_kernels_available()
    assert fused_count(prepare_for_inference(model, "inference", "cpu", torch.bfloat16)) == 0
    assert fused_count(prepare_for_inference(model, "inference", "meta")) == 0
    assert fused_count(prepare_for_inference(model, "fast", "cpu")) == 0


def _attention_case(seed: int):
    generator = torch.Generator().manual_seed(seed)
    layout = LevelLayout.from_shapes([(6, 9), (3, 5)])
    values = torch.randn(2, 6 * 9 + 3 * 5, 2, 4, generator=generator)
    keys = torch.randn(values.shape, generator=generator)
    queries = torch.randn(2, 7, 2, 4, generator=generator)
    locations = torch.rand(2, 7, 2, 2, 3, 2, generator=generator) * 1.4 - 0.2
    weights = torch.rand(2, 7, 2, 2, 3, generator=generator)
    return layout, queries, keys, values, locations, weights


@pytest.mark.parametrize("name", [k for k in KERNELS if k != "reference"])
def test_every_kernel_equals_the_reference_operation(name):
    """Each operation a kernel set replaces, on the same inputs as the reference."""
    fast, reference = paper_ops(name, torch.device("cpu")), REFERENCE_OPS
    layout, queries, keys, values, locations, weights = _attention_case(1)
    assert torch.allclose(fast.deformable_attention(values, layout, locations, weights, 3),
                          reference.deformable_attention(values, layout, locations, weights),
                          atol=1e-5)
    for got, want in zip(fast.key_aware_attention(queries, keys, values, layout, locations, 4),
                         reference.key_aware_attention(queries, keys, values, layout, locations)):
        assert torch.allclose(got, want, atol=1e-5)
    logits = torch.randn(5, 3, 12)
    assert torch.allclose(fast.softmax(logits), reference.softmax(logits), atol=1e-6)
    torch.manual_seed(0)
    linear1, linear2, norm = torch.nn.Linear(8, 32), torch.nn.Linear(32, 8), torch.nn.LayerNorm(8)
    tokens = torch.randn(3, 50, 8)
    with torch.no_grad():
        assert torch.allclose(fast.feed_forward(tokens, linear1, linear2, norm),
                              reference.feed_forward(tokens, linear1, linear2, norm), atol=1e-6)
        attention = MultiheadAttention(8, 2)
        sequence = torch.randn(4, 6, 8)
        for flags in (torch.ones(4, 6, dtype=torch.bool), torch.rand(4, 6) > 0.5):
            assert torch.allclose(attention(sequence, sequence, fast.attention_mask(flags)),
                                  attention(sequence, sequence, reference.attention_mask(flags)),
                                  atol=1e-6)
    fast_correlation = correlation_ops(name)
    image = torch.randn(2, 3, 21, 17)
    anchors = torch.rand(2, 5, 2) * 1.2 - 0.1
    start, _ = window_start(21, 17, anchors, 3)
    assert torch.equal(fast_correlation.window_crops(image, start, 3),
                       REFERENCE_CORRELATION_OPS.window_crops(image, start, 3))
    region, weight = torch.randn(6, 3, 11, 11), torch.randn(6, 3, 5, 5)
    assert torch.allclose(fast_correlation.depthwise_correlation(region, weight),
                          REFERENCE_CORRELATION_OPS.depthwise_correlation(region, weight),
                          atol=1e-4)


@pytest.mark.parametrize("name", KERNELS)
def test_a_model_tracks_alike_under_every_kernel_set(name):
    """Whole streams (with the correlation update and the motion correction) under each kernel
    set against the reference kernels: the same tracks up to float rounding."""
    from taptr import get_preset
    from taptr.models import TrackingOptions
    from taptr.tracker import Tracker
    from tracking_helpers import moving_square_frames

    torch.manual_seed(0)
    config = get_preset("tiny").replace(correlation_stages=(1,), correlation_patch=2,
                                        initialisation="tracking")
    model = build_model(config, TrackingOptions(template_update=0.25, motion_correction_px=8.0))
    frames = moving_square_frames(10, 64, 96)
    tracks = {}
    for kernels in ("reference", name):
        tracker = Tracker(model, device="cpu", options={"kernels": kernels})
        assert tracker.model.kernels == kernels
        tracks[kernels] = tracker.track(frames, grid=4, progress=False).tracks
    difference = np.abs(tracks[name] - tracks["reference"]).max(-1)  # [N, T] pixels
    # Rounding decides near-ties of a correlation peak on this flat-textured clip (as between
    # the ONNX and PyTorch backends, tests/test_onnx.py): nearly every point-frame agrees.
    assert np.median(difference) < 1e-3
    assert (difference < 1e-2).mean() >= 0.9


def test_kernels_are_chosen_once_for_every_module():
    model = use_kernels(build_model("small"), "reference")
    chosen = {type(m.ops).__name__: m.ops.name for m in model.modules() if hasattr(m, "ops")}
    assert chosen == {"PaperOps": "reference", "CorrelationOps": "reference"}
    use_kernels(model, "inference")
    assert {m.ops.name for m in model.modules() if hasattr(m, "ops")} == {"inference"}


@pytest.mark.parametrize("shape", [(7, 12), (2, 5, 3, 12), (4, 1), (3, 48), (5,)])
def test_softmax_of_short_rows_equals_softmax(shape):
    logits = torch.randn(*shape, requires_grad=True)
    got, want = softmax_last(logits), logits.softmax(-1)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)
    grad_got, = torch.autograd.grad((got * torch.arange(got.numel()).view(shape)).sum(), logits)
    grad_want, = torch.autograd.grad((want * torch.arange(got.numel()).view(shape)).sum(),
                                     logits)
    assert torch.allclose(grad_got, grad_want, atol=1e-5, rtol=1e-4)


def test_window_crops_from_row_segments_equal_the_gathered_crops():
    """The fast crops read zero-padded row segments; the general ones gather pixels and mask
    those off the map: the same numbers for anchors inside, on the border and just outside;
    anchors far outside take the general path (None)."""
    generator = torch.Generator().manual_seed(3)
    radius = 4
    anchors = torch.tensor([[[0.5, 0.5], [0.0, 0.0], [1.0, 1.0], [0.999, 0.001], [-0.05, 1.04],
                             [0.31, 0.77]]]).repeat(2, 1, 1)
    anchors[1] += 0.0123
    for height, width, channels in ((21, 17, 3), (12, 30, 5)):
        image = torch.randn(2, channels, height, width, generator=generator)
        start, _ = window_start(height, width, anchors, radius)
        fast = _row_segments(image, start, radius)
        assert fast is not None
        index, inside = window_indices(height, width, start, radius)
        table = image.permute(0, 2, 3, 1).reshape(-1, channels)
        images = torch.arange(2).view(2, 1, 1, 1) * (height * width)
        general = table[index + images] * inside[..., None].to(image.dtype)
        assert torch.equal(fast, general)
        offsets = window_offsets(radius) / torch.tensor([width, height])
        assert torch.allclose(sample_window(image, anchors, radius),
                              sample_map(image, anchors[:, :, None] + offsets), atol=1e-5)
        far = anchors.clone()
        far[0, 0] = torch.tensor([-3.0, 0.5])
        far_start, _ = window_start(height, width, far, radius)
        assert _row_segments(image, far_start, radius) is None
        assert torch.equal(gather_crops(image, far_start, radius),
                           correlation_ops("inference").window_crops(image, far_start, radius))
        assert torch.allclose(sample_window(image, far, radius),
                              sample_map(image, far[:, :, None] + offsets), atol=1e-5)


def test_packed_canvas_puts_each_head_of_a_pixel_side_by_side_with_zero_borders():
    layout = LevelLayout.from_shapes([(4, 5), (2, 3)])
    heads, head_dim = 2, 3
    tokens = torch.randn(2, 4 * 5 + 2 * 3, heads * head_dim)
    rows = pack_levels_rows(tokens, layout, heads)
    canvas = rows.view(2, layout.canvas_height, layout.canvas_width, heads, head_dim)
    level = tokens[:, :20].view(2, 4, 5, heads, head_dim)
    assert torch.equal(canvas[:, 1:5, 1:6], level)
    second = tokens[:, 20:].view(2, 2, 3, heads, head_dim)
    x = layout.x_offsets[1]
    assert torch.equal(canvas[:, 1:3, x + 1:x + 4], second)
    inside = torch.zeros(layout.canvas_height, layout.canvas_width, dtype=torch.bool)
    inside[1:5, 1:6] = True
    inside[1:3, x + 1:x + 4] = True
    assert canvas[:, ~inside].abs().max() == 0
    channels_first = pack_levels(tokens, layout, heads)  # [Nb*M, d, Hc, Wc]
    assert torch.equal(channels_first.view(2, heads, head_dim, *inside.shape),
                       canvas.permute(0, 3, 4, 1, 2))


def test_feed_forward_in_row_chunks_equals_one_pass(monkeypatch):
    from taptr.models.kernels import feed_forward

    torch.manual_seed(0)
    linear1, linear2, norm = torch.nn.Linear(8, 32), torch.nn.Linear(32, 8), torch.nn.LayerNorm(8)
    inputs = torch.randn(3, 50, 8)
    want = REFERENCE_OPS.feed_forward(inputs, linear1, linear2, norm)
    monkeypatch.setattr(feed_forward, "FEED_FORWARD_CHUNK", 64 * 32)  # 64 rows: 3 chunks
    with torch.no_grad():
        got = feed_forward.chunked_feed_forward(inputs, linear1, linear2, norm)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)
    # The autograd-safe kernels (training) keep the one pass, and gradients flow.
    trained = paper_ops("fast", torch.device("cpu")).feed_forward(inputs, linear1, linear2, norm)
    trained.sum().backward()
    assert linear1.weight.grad is not None


def test_fused_convolution_falls_back_when_the_private_operator_fails(monkeypatch):
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    fused = FusedConv2d(conv, "relu6")
    fused.fused = True

    def broken(*args, **kwargs):
        raise RuntimeError("operator signature changed")

    monkeypatch.setattr(fused, "_fused", broken)
    inputs = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        out = fused(inputs)
        assert torch.allclose(out, torch.nn.functional.relu6(conv(inputs)), atol=1e-6)
    assert not fused.fused  # later calls go straight to the eager ops


def test_channels_last_convolution_equals_the_convolution():
    from taptr.models.kernels.backbone import ChannelsLastConv2d

    torch.manual_seed(0)
    for conv in (torch.nn.Conv2d(40, 16, 1), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)):
        inputs = torch.randn(2, conv.in_channels, 9, 13)
        with torch.no_grad():
            got = ChannelsLastConv2d(conv)(inputs)
            assert got.is_contiguous()
            assert torch.allclose(got, conv(inputs), atol=1e-5)


@pytest.mark.skipif(not fused_kernels_available(), reason="needs oneDNN's fused convolution")
def test_inference_tracks_do_not_depend_on_the_thread_count():
    """The bundled model prepared for CPU inference gives the same bits with 1 and 2 threads
    (PyTorch's own convolution of a contiguous input does not, and the window loop grows such
    differences into lost points: docs/tracking.md, "Threads")."""
    from taptr.tracker import Tracker

    rng = np.random.default_rng(3)
    texture = rng.integers(0, 256, (140, 200, 3), dtype=np.uint8)
    frames = np.stack([texture[2 * t:2 * t + 96, 3 * t:3 * t + 128] for t in range(14)])
    tracker = Tracker.from_pretrained(device="cpu")
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            result = tracker.track(frames, grid=6, progress=False)
            results.append((result.tracks.copy(), result.visibility.copy()))
    finally:
        torch.set_num_threads(previous)
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])
