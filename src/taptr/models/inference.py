"""Inference-only speed-ups that keep the function: folded batch norms, channels-last convs,
fused backbone blocks (`models/fused_backbone.py`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from taptr.models.common import FrozenBatchNorm2d
from taptr.models.fused_backbone import fuse_backbone


def fold_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every FrozenBatchNorm2d into the convolution registered just before it (in place).

    The folded module computes the same function (up to rounding) with one op less per conv;
    its state dict no longer has the batch-norm entries, so use it for inference only.
    """
    previous_conv = None
    replacements = []
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            previous_conv = child
        elif isinstance(child, FrozenBatchNorm2d):
            if previous_conv is None or previous_conv.out_channels != child.weight.numel():
                raise ValueError(f"cannot fold {name}: no matching convolution before it")
            scale = child.weight * (child.running_var + child.eps).rsqrt()
            shift = child.bias - child.running_mean * scale
            with torch.no_grad():
                previous_conv.weight.mul_(scale.view(-1, 1, 1, 1))
                bias = shift if previous_conv.bias is None else previous_conv.bias * scale + shift
                previous_conv.bias = nn.Parameter(bias.clone())
            replacements.append(name)
            previous_conv = None
    for name in replacements:
        parent_name, _, attribute = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attribute, nn.Identity())
    return module


def optimized_for_inference(model: nn.Module, fuse: bool = True) -> nn.Module:
    """A copy of a TAPTRv2 model for fast inference: batch norms folded, backbone in
    channels-last memory format (faster convolutions on CPU) and, with `fuse`, its blocks
    fused (each convolution with its bias, residual sum and activation one oneDNN call on the
    CPU; `fuse=False` for ONNX export, which must trace plain convolutions). Same outputs
    within ~1e-5; the copy's state dict has other keys, so use it for inference only."""
    model = copy.deepcopy(model).eval()
    fold_frozen_batchnorm(model.backbone)
    model.backbone.to(memory_format=torch.channels_last)
    if fuse:
        model.backbone = fuse_backbone(model.backbone)
    model.channels_last_backbone = True
    return model
