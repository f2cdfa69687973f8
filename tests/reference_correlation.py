"""A slow, obviously correct patch reader for the correlation tests (tests only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from taptr.models.additions.correlation import PATCH_MIN_NORM, sample_map, window_offsets


def patch_descriptors(image: torch.Tensor, locations: torch.Tensor,
                      patch_radius: int) -> torch.Tensor:
    """Zero-mean, unit-norm RGB patches of an image around arbitrary locations, each tap read
    on its own. image: [Nb, 3, H, W]; locations: [Nb, Q, K, 2] model coordinates.
    returns [Nb, Q, K, 3 * (2p+1)^2], each patch ordered (channel, row, column)."""
    size = locations.new_tensor([image.shape[-1], image.shape[-2]])
    taps = window_offsets(patch_radius, locations.device, locations.dtype) / size  # [P, 2]
    batch, queries, count, _ = locations.shape
    spots = (locations[:, :, :, None, :] + taps).flatten(2, 3)  # [Nb, Q, K*P, 2]
    patches = sample_map(image, spots).reshape(batch, queries, count, -1, image.shape[1])
    patches = patches.transpose(-1, -2).flatten(-2)
    return F.normalize(patches - patches.mean(-1, keepdim=True), dim=-1, eps=PATCH_MIN_NORM)
