"""Backbones returning four feature maps at strides 4, 8, 16 and 32.

Parameter names follow torchvision exactly (ResNet: `conv1`, `layer1.0.conv1`, ...; MobileNetV2:
`features.N...`), so ImageNet state dicts load as they are. Batch norms are frozen
(`FrozenBatchNorm2d`), as in the official code.
"""

from __future__ import annotations

import torch
from torch import nn

from taptr.models.taptrv2.common import FrozenBatchNorm2d


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
    return nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2,
                     groups=groups, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = _conv(in_channels, channels, 3, stride)
        self.bn1 = FrozenBatchNorm2d(channels)
        self.conv2 = _conv(channels, channels, 3)
        self.bn2 = FrozenBatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(_conv(in_channels, channels, 1, stride),
                                            FrozenBatchNorm2d(channels))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(inputs)))
        out = self.bn2(self.conv2(out))
        shortcut = inputs if self.downsample is None else self.downsample(inputs)
        return torch.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = _conv(in_channels, channels, 1)
        self.bn1 = FrozenBatchNorm2d(channels)
        self.conv2 = _conv(channels, channels, 3, stride)
        self.bn2 = FrozenBatchNorm2d(channels)
        self.conv3 = _conv(channels, out_channels, 1)
        self.bn3 = FrozenBatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(_conv(in_channels, out_channels, 1, stride),
                                            FrozenBatchNorm2d(out_channels))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(inputs)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = inputs if self.downsample is None else self.downsample(inputs)
        return torch.relu(out + shortcut)


RESNET_LAYOUTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """torchvision ResNet without avgpool/fc; `forward` returns layer1..layer4 outputs."""

    def __init__(self, name: str):
        super().__init__()
        block, depths = RESNET_LAYOUTS[name]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        self.stage_channels = []
        for index, (depth, width) in enumerate(zip(depths, (64, 128, 256, 512))):
            blocks = []
            for block_index in range(depth):
                stride = 2 if (block_index == 0 and index > 0) else 1
                blocks.append(block(in_channels, width, stride))
                in_channels = width * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            self.stage_channels.append(in_channels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [B, 3, H, W] -> 4 maps [B, C_s, H/2^(s+2), W/2^(s+2)]."""
        out = self.maxpool(torch.relu(self.bn1(self.conv1(images))))
        stages = []
        for index in range(4):
            out = getattr(self, f"layer{index + 1}")(out)
            stages.append(out)
        return stages


class ConvNormActivation(nn.Sequential):
    """conv, frozen BN, ReLU6 (torchvision's `Conv2dNormActivation` layout: 0, 1, 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 groups: int = 1):
        super().__init__(_conv(in_channels, out_channels, kernel, stride, groups),
                         FrozenBatchNorm2d(out_channels), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormActivation(in_channels, hidden, 1))
        layers += [ConvNormActivation(hidden, hidden, 3, stride, groups=hidden),
                   _conv(hidden, out_channels, 1), FrozenBatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.conv(inputs)
        return inputs + out if self.use_residual else out


# (expand ratio, channels, repeats, first stride) of torchvision's MobileNetV2.
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Index of the last `features` module of each stride-4/8/16/32 stage.
MOBILENET_V2_STAGE_ENDS = (3, 6, 13, 18)


class MobileNetV2(nn.Module):
    """torchvision MobileNetV2 `features` (width 1.0); stages end at features 3, 6, 13, 18."""

    def __init__(self):
        super().__init__()
        modules: list[nn.Module] = [ConvNormActivation(3, 32, 3, 2)]
        in_channels = 32
        for expand_ratio, channels, repeats, stride in MOBILENET_V2_SETTINGS:
            for index in range(repeats):
                modules.append(InvertedResidual(in_channels, channels,
                                                stride if index == 0 else 1, expand_ratio))
                in_channels = channels
        modules.append(ConvNormActivation(in_channels, 1280, 1))
        self.features = nn.Sequential(*modules)
        self.stage_channels = [24, 32, 96, 1280]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [B, 3, H, W] -> 4 maps at strides 4, 8, 16, 32."""
        stages = []
        out = images
        for index, module in enumerate(self.features):
            out = module(out)
            if index in MOBILENET_V2_STAGE_ENDS:
                stages.append(out)
        return stages


def build_backbone(name: str) -> nn.Module:
    """A backbone by name; it has `stage_channels` (4 ints) and returns 4 maps."""
    if name in RESNET_LAYOUTS:
        return ResNet(name)
    if name == "mobilenet_v2":
        return MobileNetV2()
    raise ValueError(f"unknown backbone {name!r}")


def backbone_stage_channels(name: str) -> list[int]:
    """Channels of the 4 stages of backbone `name`, without building it."""
    if name in RESNET_LAYOUTS:
        block, _ = RESNET_LAYOUTS[name]
        return [width * block.expansion for width in (64, 128, 256, 512)]
    if name == "mobilenet_v2":
        return [24, 32, 96, 1280]
    raise ValueError(f"unknown backbone {name!r}")
