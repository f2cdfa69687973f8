"""Inference-only backbone blocks whose convolution, bias, residual sum and activation run as
one oneDNN call on the CPU (ours; the function is the backbone's, only the kernels differ).

After `fold_frozen_batchnorm` every backbone convolution is followed by at most a residual sum
and a ReLU or ReLU6. Eager PyTorch runs those as separate passes over memory: on this project's
2-core CPU the ReLU6 passes, the bias copies of the 1x1 convolutions and the sums cost as much
as the convolutions themselves (`docs/tracking.md`, "Speed and memory"). oneDNN applies them as
post-operations while the convolution's output is still in cache:
`torch.ops.mkldnn._convolution_pointwise`, the operator PyTorch's own compiler (inductor)
emits for the same fusion. The fused blocks are chosen when a model is prepared for CPU
float32 inference (`taptr.models.kernels.prepare_for_inference`, which keeps the eager blocks
where the operator is missing, for other devices and dtypes); they do not record autograd. If
the private operator fails at run time (another PyTorch), a block falls back to the eager ops:
the same results up to float rounding (tests/test_kernels.py).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from taptr.models.taptrv2.backbone import (MOBILENET_V2_STAGE_ENDS, BasicBlock, Bottleneck,
                                           ConvNormActivation, InvertedResidual, MobileNetV2,
                                           ResNet)

ACTIVATIONS = ("none", "relu", "relu6")
_logger = logging.getLogger(__name__)


def fused_kernels_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused convolution operator."""
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def _eager_activation(out: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(out)
    if activation == "relu6":
        return F.relu6(out)
    return out


class FusedConv2d(nn.Module):
    """activation(conv(x) + bias [+ residual]) in one call.

    conv: an `nn.Conv2d` with batch norm already folded in (its weight and bias are shared,
    not copied); activation: 'none', 'relu' or 'relu6'. `forward(x, residual=None)`:
    x [B, C_in, H, W], residual [B, C_out, H', W'] added before the activation.
    Raises ValueError for another activation.
    """

    def __init__(self, conv: nn.Conv2d, activation: str = "none"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.conv = conv
        self.activation = activation
        self.fused = fused_kernels_available()

    def forward(self, inputs: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.fused:
            try:
                return self._fused(inputs, residual)
            except (RuntimeError, TypeError) as error:  # another PyTorch's private operator
                _logger.debug("fused convolution unavailable (%s); using eager ops", error)
                self.fused = False
        out = self.conv(inputs)
        if residual is not None:
            out = out + residual
        return _eager_activation(out, self.activation)

    def _fused(self, inputs: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        conv = self.conv
        geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        unary = None if self.activation == "none" else ("hardtanh" if self.activation == "relu6"
                                                        else "relu")
        scalars = [0.0, 6.0] if self.activation == "relu6" else []
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(
                inputs, conv.weight, conv.bias, *geometry, unary or "none", scalars, "")
        # oneDNN fuses a sum followed by ReLU, not by ReLU6 (no block of ours has that).
        after_sum = unary if unary == "relu" else None
        out = torch.ops.mkldnn._convolution_pointwise.binary(
            inputs, residual.contiguous(memory_format=_format_of(inputs)), conv.weight,
            conv.bias, *geometry, "add", 1.0, after_sum, [], "")
        return out if after_sum == unary else _eager_activation(out, self.activation)


class ChannelsLastConv2d(FusedConv2d):
    """A plain convolution run as oneDNN's convolution on a channels-last input, returned
    contiguous: the same function as `conv` (up to float rounding), and on a CPU the same bits
    whatever the number of threads, which PyTorch's own convolution of a contiguous input is
    not (a 1x1 convolution over 1280 channels differed by 5e-6 between 1 and 2 threads,
    and the window loop grows such differences into lost points: docs/tracking.md, "Threads").
    `forward(x)`: x [B, C_in, H, W] -> [B, C_out, H', W']."""

    def forward(self, inputs: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        return super().forward(inputs, residual).contiguous()


def convolutions_channels_last(module: nn.Module) -> nn.Module:
    """Replace every `nn.Conv2d` inside `module` by a `ChannelsLastConv2d` sharing its
    parameters (in place; returns the module)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                setattr(parent, name, ChannelsLastConv2d(child))
    return module


def _format_of(tensor: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if tensor.dim() == 4
            and tensor.is_contiguous(memory_format=torch.channels_last)
            and not tensor.is_contiguous() else torch.contiguous_format)


def _folded(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """`conv`, checked to have its batch norm `norm` folded into it (`fold_frozen_batchnorm`
    leaves an Identity and a bias). Raises ValueError otherwise."""
    if not isinstance(norm, nn.Identity) or conv.bias is None:
        raise ValueError("fold the batch norms (fold_frozen_batchnorm) before fusing")
    return conv


def _folded_conv(block: nn.Module) -> nn.Conv2d:
    """The convolution of a (conv, folded norm[, activation]) sequence."""
    return _folded(block[0], block[1])


class FusedInvertedResidual(nn.Module):
    """MobileNetV2's inverted residual: expand (ReLU6), depthwise (ReLU6), project, + input."""

    def __init__(self, block: InvertedResidual):
        super().__init__()
        layers = list(block.conv)
        convs = [FusedConv2d(_folded_conv(layer), "relu6") for layer in layers[:-2]]
        convs.append(FusedConv2d(_folded(layers[-2], layers[-1]), "none"))
        self.convs = nn.ModuleList(convs)
        self.use_residual = block.use_residual

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = inputs
        for conv in self.convs[:-1]:
            out = conv(out)
        return self.convs[-1](out, inputs if self.use_residual else None)


class FusedResidualBlock(nn.Module):
    """A ResNet basic or bottleneck block: every conv with ReLU, the last one with the
    shortcut sum and the ReLU after it."""

    def __init__(self, block: BasicBlock | Bottleneck):
        super().__init__()
        names = ["conv1", "conv2", "conv3"] if isinstance(block, Bottleneck) else ["conv1",
                                                                                   "conv2"]
        self.convs = nn.ModuleList(
            FusedConv2d(_folded(getattr(block, name), getattr(block, "bn" + name[-1])), "relu")
            for name in names)
        self.downsample = (None if block.downsample is None
                           else FusedConv2d(_folded_conv(block.downsample), "none"))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        shortcut = inputs if self.downsample is None else self.downsample(inputs)
        out = inputs
        for conv in self.convs[:-1]:
            out = conv(out)
        return self.convs[-1](out, shortcut)


class _FusedStem(nn.Module):
    """ResNet's stem: conv (folded norm) with ReLU, then the max pool."""

    def __init__(self, conv: nn.Conv2d, pool: nn.Module):
        super().__init__()
        self.conv = FusedConv2d(conv, "relu")
        self.pool = pool

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(images))


class FusedMobileNetV2(nn.Module):
    """`MobileNetV2` with fused blocks; the same stages."""

    def __init__(self, backbone: MobileNetV2):
        super().__init__()
        blocks = []
        for module in backbone.features:
            if isinstance(module, ConvNormActivation):
                blocks.append(FusedConv2d(_folded_conv(module), "relu6"))
            else:
                blocks.append(FusedInvertedResidual(module))
        self.features = nn.ModuleList(blocks)
        self.stage_channels = backbone.stage_channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        stages, out = [], images
        for index, block in enumerate(self.features):
            out = block(out)
            if index in MOBILENET_V2_STAGE_ENDS:
                stages.append(out)
        return stages


class FusedResNet(nn.Module):
    """`ResNet` with fused blocks; the same stages."""

    def __init__(self, backbone: ResNet):
        super().__init__()
        self.stem = _FusedStem(_folded(backbone.conv1, backbone.bn1), backbone.maxpool)
        self.layers = nn.ModuleList(
            nn.Sequential(*(FusedResidualBlock(block) for block in getattr(backbone, name)))
            for name in ("layer1", "layer2", "layer3", "layer4"))
        self.stage_channels = backbone.stage_channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        stages, out = [], self.stem(images)
        for layer in self.layers:
            out = layer(out)
            stages.append(out)
        return stages


def fuse_backbone(backbone: nn.Module) -> nn.Module:
    """The fused inference version of a batch-norm-folded `MobileNetV2` or `ResNet` (sharing
    its parameters); any other module is returned unchanged."""
    if isinstance(backbone, MobileNetV2):
        return FusedMobileNetV2(backbone)
    if isinstance(backbone, ResNet):
        return FusedResNet(backbone)
    return backbone
