"""Backbone preparations for inference that keep the function: folded batch norms and
channels-last convolutions (ours)."""

from __future__ import annotations

import torch
from torch import nn

from taptr.models.taptrv2.common import FrozenBatchNorm2d


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


class ChannelsLast(nn.Module):
    """A backbone whose weights and input are in channels-last memory format (faster
    convolutions on a CPU); the same stages (`stage_channels` passed through)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.body = backbone.to(memory_format=torch.channels_last)
        self.stage_channels = backbone.stage_channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.body(images.contiguous(memory_format=torch.channels_last))
