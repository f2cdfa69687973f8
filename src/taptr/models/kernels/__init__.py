"""Fast kernels, chosen by name when a model is built or prepared (as Hugging Face's
`attn_implementation`); each is tested against the plain math it replaces
(tests/test_kernels.py).

| name | what runs | for |
|---|---|---|
| `reference` | the plain math of `taptrv2.ops` and `additions.correlation`: `grid_sample` sampling, softmax, one-pass FFN, gathered crops, NCC by shifted products | reading, checking, ONNX export |
| `fast` | row-gather sampling (`sampling.py`), short-row softmax on a CPU (`softmax.py`), the self-attention mask skipped where it allows every pair, NCC by one convolution (`correlation.py`); autograd-safe | training (`build_model`'s default) |
| `inference` | `fast`, plus on a CPU the chunked FFN (`feed_forward.py`) and row-segment crops (`correlation.py`); batch norms folded, channels-last backbone, and on a CPU in float32 the fused oneDNN backbone and every other convolution as oneDNN's on channels-last inputs (`backbone.py`: the same bits for any thread count); no autograd | `Tracker`, `taptr track` (`prepare_for_inference`) |

The choice is made once, here; no kernel inspects the device, autograd or tracing while it
runs. Where a kernel cannot run (another device or dtype) the selection falls back to the
reference one for that operation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from taptr.errors import TaptrError
from taptr.models.additions.correlation import (REFERENCE_CORRELATION_OPS, CorrelationOps,
                                                gather_crops)
from taptr.models.kernels.backbone import (convolutions_channels_last, fuse_backbone,
                                           fused_kernels_available)
from taptr.models.kernels.correlation import correlate_by_convolution, row_segment_crops
from taptr.models.kernels.feed_forward import chunked_feed_forward
from taptr.models.kernels.prepare import ChannelsLast, fold_frozen_batchnorm
from taptr.models.kernels.sampling import gather_deformable_attention, gather_key_aware_attention
from taptr.models.kernels.softmax import softmax_last
from taptr.models.taptrv2.common import feed_forward as one_pass_feed_forward
from taptr.models.taptrv2.ops import REFERENCE_OPS, PaperOps, same_group_mask, softmax

KERNELS = ("reference", "fast", "inference")


def mask_unless_uniform(flags: torch.Tensor) -> torch.Tensor | None:
    """`same_group_mask`, or None (no mask: a faster attention kernel, the same result) when
    every sequence has one flag only."""
    if bool((flags == flags[:, :1]).all()):
        return None
    return same_group_mask(flags)


def check_kernels(name: str) -> str:
    if name not in KERNELS:
        raise TaptrError(f"unknown kernels {name!r}; choose one of {KERNELS}")
    return name


def paper_ops(name: str, device: torch.device) -> PaperOps:
    """The network's operations for kernels `name` on `device`."""
    if check_kernels(name) == "reference":
        return REFERENCE_OPS
    cpu = torch.device(device).type == "cpu"
    return PaperOps(name, gather_deformable_attention, gather_key_aware_attention,
                    softmax_last if cpu else softmax,
                    chunked_feed_forward if cpu and name == "inference" else one_pass_feed_forward,
                    mask_unless_uniform)


def correlation_ops(name: str) -> CorrelationOps:
    """The correlation update's operations for kernels `name`."""
    if check_kernels(name) == "reference":
        return REFERENCE_CORRELATION_OPS
    return CorrelationOps(name, row_segment_crops if name == "inference" else gather_crops,
                          correlate_by_convolution)


def use_kernels(model: nn.Module, name: str, device=None) -> nn.Module:
    """Give every module of `model` the operations of kernels `name` (in place; returns the
    model). device: where it will run (None: where its parameters are). Raises `TaptrError`
    for an unknown name."""
    if device is None:
        device = next(model.parameters()).device
    chosen_paper, chosen_correlation = paper_ops(name, device), correlation_ops(name)
    for module in model.modules():
        ops = getattr(module, "ops", None)
        if isinstance(ops, PaperOps):
            module.ops = chosen_paper
        elif isinstance(ops, CorrelationOps):
            module.ops = chosen_correlation
    model.kernels = name
    return model


def default_kernels(device) -> str:
    """The kernels a tracker uses when the options name none: `inference`."""
    return "inference"


def prepare_for_inference(model: nn.Module, kernels: str | None = None, device=None,
                          autocast_dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of a TAPTRv2 model in eval mode with kernels `kernels` (None: `inference`) for
    `device` (None: CPU). For `inference` the backbone's batch norms are folded, it runs
    channels-last, and on a CPU in float32 without autocast its blocks are fused. The copy's
    state dict may have other keys: use it for inference only."""
    device = torch.device("cpu" if device is None else device)
    name = check_kernels(kernels or default_kernels(device))
    model = copy.deepcopy(model).eval()
    use_kernels(model, name, device)
    if name == "inference":
        backbone = fold_frozen_batchnorm(model.backbone)
        fused = (device.type == "cpu" and autocast_dtype is None and fused_kernels_available()
                 and next(model.parameters()).dtype == torch.float32)
        if fused:
            backbone = fuse_backbone(backbone.to(memory_format=torch.channels_last))
        model.backbone = ChannelsLast(backbone)
        if fused:  # the other convolutions too: thread-count-independent results
            for name, child in model.named_children():
                if name != "backbone":
                    convolutions_channels_last(child)
    return model
