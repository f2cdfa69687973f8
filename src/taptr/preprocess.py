"""Frames -> network input: resizing and ImageNet normalisation.

Resizing uses bilinear interpolation with half-pixel centres (`align_corners=False`) and
antialiasing, so a pixel coordinate maps to the resized frame exactly as
`taptr.coords.pixel_to_input` says: x_in = (x + 0.5) * W_in / W - 0.5.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from taptr.errors import TaptrError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_channels_first(frames: torch.Tensor) -> torch.Tensor:
    """[..., H, W, 3] or [..., 3, H, W] -> [..., 3, H, W] (a view when already channels-first).

    A trailing axis of size 3 is read as channels-last.
    """
    if frames.ndim < 3:
        raise TaptrError(f"frames need at least 3 dimensions, got shape {tuple(frames.shape)}")
    if frames.shape[-1] == 3:
        return frames.movedim(-1, -3)
    if frames.shape[-3] == 3:
        return frames
    raise TaptrError(
        f"frames must be RGB [..., H, W, 3] or [..., 3, H, W], got shape {tuple(frames.shape)}"
    )


def normalize(frames) -> torch.Tensor:
    """RGB frames -> ImageNet mean/std normalised float32 `[..., 3, H, W]`.

    frames: uint8 (0..255) or float (0..1) array/tensor, `[..., H, W, 3]` or `[..., 3, H, W]`.
    The result stays on the input tensor's device.
    """
    if not isinstance(frames, torch.Tensor):
        frames = torch.from_numpy(np.require(frames, requirements=("C", "W")))
    tensor = to_channels_first(frames)
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif tensor.is_floating_point():
        tensor = tensor.float()
    else:
        raise TaptrError(f"frames must be uint8 or float, got {tensor.dtype}")
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=tensor.device).view(shape)
    std = torch.tensor(IMAGENET_STD, device=tensor.device).view(shape)
    return (tensor - mean) / std


def resize_frames(frames: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """Resize `[t, 3, H, W]` frames to `input_size` = (H_in, W_in).

    Bilinear, `align_corners=False`, antialiased. uint8 frames stay uint8 (rounded), float
    frames stay float. Frames already at the input size are returned unchanged.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise TaptrError(f"resize_frames expects [t, 3, H, W], got shape {tuple(frames.shape)}")
    height, width = int(input_size[0]), int(input_size[1])
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    if frames.dtype == torch.uint8 and frames.device.type != "cpu":
        resized = _resize(frames.float(), height, width)
        return resized.round_().clamp_(0, 255).to(torch.uint8)
    return _resize(frames, height, width)


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(
        frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )


def prepare_frames(frames, input_size: tuple[int, int]) -> torch.Tensor:
    """uint8 RGB frames `[t, H, W, 3]` (array or tensor) -> model input `[t, 3, H_in, W_in]`.

    Resizes in uint8 (so every path through the tracker sees the same numbers), then normalises.
    """
    if not isinstance(frames, torch.Tensor):
        frames = torch.from_numpy(np.require(frames, requirements=("C", "W")))
    return normalize(resize_frames(to_channels_first(frames), input_size))
