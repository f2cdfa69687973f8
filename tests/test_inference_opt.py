"""Inference-only speed-ups keep the function: fused backbone blocks, the short-row softmax,
the row-segment crops of the correlation windows, the packed canvas layout."""

from __future__ import annotations

import copy

import pytest
import torch

from taptr.models.backbone import build_backbone
from taptr.models.common import softmax_last
from taptr.models.additions.correlation import (_crops_by_row_segments, _window_indices, _window_start,
                                      sample_map, sample_window, window_offsets)
from taptr.models.deformable_attention import LevelLayout, pack_levels, pack_levels_rows
from taptr.models.fused_backbone import FusedConv2d, fuse_backbone, fused_kernels_available
from taptr.models.inference import fold_frozen_batchnorm


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


def test_fused_convolution_falls_back_to_autograd_when_a_gradient_is_needed():
    conv = torch.nn.Conv2d(3, 5, 1)
    fused = FusedConv2d(conv, "relu6")
    inputs = torch.randn(1, 3, 4, 4, requires_grad=True)
    out = fused(inputs)
    assert out.requires_grad
    out.sum().backward()
    assert inputs.grad is not None and conv.weight.grad is not None


def test_the_fused_path_runs_where_the_operator_exists():
    """The fusion is the point of the module: on this CPU build the oneDNN operator is there
    (a build without it still gives the same results, through the eager path)."""
    conv = torch.nn.Conv2d(3, 5, 1)
    fused = FusedConv2d(conv, "relu")
    with torch.no_grad():
        assert fused._use_fused(torch.randn(1, 3, 4, 4)) == fused_kernels_available()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not fused._use_fused(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("shape", [(7, 12), (2, 5, 3, 12), (4, 1), (3, 48), (5,)])
def test_softmax_of_short_rows_equals_softmax(shape):
    logits = torch.randn(*shape, requires_grad=True)
    got, want = softmax_last(logits), logits.softmax(-1)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)
    grad_got, = torch.autograd.grad((got * torch.arange(got.numel()).view(shape)).sum(), logits)
    grad_want, = torch.autograd.grad((want * torch.arange(got.numel()).view(shape)).sum(),
                                     logits)
    assert torch.allclose(grad_got, grad_want, atol=1e-5)


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
        start, _ = _window_start(height, width, anchors, radius)
        fast = _crops_by_row_segments(image, start, radius)
        assert fast is not None
        index, inside = _window_indices(height, width, start, radius)
        table = image.permute(0, 2, 3, 1).reshape(-1, channels)
        images = torch.arange(2).view(2, 1, 1, 1) * (height * width)
        general = table[index + images] * inside[..., None].to(image.dtype)
        assert torch.equal(fast, general)
        offsets = window_offsets(radius) / torch.tensor([width, height])
        assert torch.allclose(sample_window(image, anchors, radius),
                              sample_map(image, anchors[:, :, None] + offsets), atol=1e-5)
        far = anchors.clone()
        far[0, 0] = torch.tensor([-3.0, 0.5])
        far_start, _ = _window_start(height, width, far, radius)
        assert _crops_by_row_segments(image, far_start, radius) is None
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
    from taptr.models import common

    torch.manual_seed(0)
    linear1, linear2, norm = torch.nn.Linear(8, 32), torch.nn.Linear(32, 8), torch.nn.LayerNorm(8)
    inputs = torch.randn(3, 50, 8)
    want = norm(inputs + linear2(torch.relu(linear1(inputs))))
    monkeypatch.setattr(common, "FEED_FORWARD_CHUNK", 64 * 32)  # 64 rows per chunk: 3 chunks
    with torch.no_grad():
        got = common.residual_feed_forward(inputs, linear1, linear2, norm)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)
    # With autograd: one pass, gradients flow.
    trained = common.residual_feed_forward(inputs, linear1, linear2, norm)
    trained.sum().backward()
    assert linear1.weight.grad is not None


def test_keeping_freed_memory_applies_on_linux_with_glibc():
    import platform
    import sys

    from taptr.device import keep_freed_memory

    applies = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() == applies
    assert keep_freed_memory() == applies  # idempotent


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
