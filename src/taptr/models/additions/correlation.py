"""Local correlation position update: our addition to TAPTRv2 (not in the paper).

The paper's decoder finds a point only through its key-aware attention, whose logits act as a
sparse cost volume (TAPTRv2 section 3.3). That signal exists only once the projections have been
trained. Our small presets add an explicit, dense one, as RAFT, PIPs++ and CoTracker do: after
each decoder layer, at the layer's position estimate in every window frame, the point's template
(read at its query position in its query frame) is correlated with a (2r+1) x (2r+1) window
around the estimate, at each correlation level from coarse to fine, and the point moves to the
match (soft-argmax on feature levels, sub-pixel peak on the pixel level); a small MLP over the
same correlation values adds a learned residual and a visibility logit. With the ImageNet
backbone and `init_for_tracking` (identity projections, zero MLP output) the untrained model is
an iterative, coarse-to-fine template matcher: it tracks at step 0, and training refines it.

Feature levels are backbone stages through a 1x1 projection, L2-normalised per pixel, so their
correlations are cosine similarities. The optional last, finest level works on the network's
input image itself: its descriptors are (2p+1)^2 RGB patches, made zero-mean and unit-norm, so
its correlation is the normalised cross-correlation (NCC) of classical template matching, with
the sub-pixel precision that stride-8 features cannot give. docs/correlation.md has the
measurements behind every constant below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


# Initial softmax sharpness (multiplies cosine similarity / NCC), measured at step 0 on the
# validation sets (docs/correlation.md): sharper is more precise, because a soft-argmax over a
# flat window is pulled towards its centre.
FEATURE_SCALE = 200.0
PIXEL_SCALE = 1000.0
# Motion prior: the softmax logits lose prior * (offset in level pixels)^2. On the stride-8
# level it stops jumps to a slightly better match far away (easy set, within 8 px: 0.84 ->
# 0.91); the pixel level needs none.
FEATURE_PRIOR = 3.0
# Visibility at step 0: + gain * (best pixel-level NCC - threshold); a poor match is called
# occluded, which also takes lost tracks out of the Jaccard's false positives.
PEAK_GAIN = 10.0
PEAK_THRESHOLD = 0.5
# Smallest norm of a zero-mean patch (input-image units, ImageNet-normalised) that NCC treats as
# texture: below it a patch is flat and correlates 0 with everything. Without a floor, flat
# patches (outside the image, where padding is constant) got NCC +-1 from rounding residues,
# and points near the border could jump there. One grey level of texture over a 9x9 RGB
# patch is about 0.14.
PATCH_MIN_NORM = 1e-2


def window_offsets(radius: int, device=None, dtype=None) -> torch.Tensor:
    """[K, 2] (dx, dy) integer offsets of a (2r+1)^2 grid, row-major (K = (2r+1)^2)."""
    steps = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack((dx.flatten(), dy.flatten()), -1)


def sample_map(feature_map: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of feature maps at model coordinates (zero outside the map).

    feature_map: [Nb, C, h, w]; locations: [Nb, Q, K, 2] (u, v), read at level pixel
    (u * w - 0.5, v * h - 0.5) like the deformable attention. returns [Nb, Q, K, C].
    """
    samples = F.grid_sample(feature_map, 2 * locations - 1, mode="bilinear",
                            padding_mode="zeros", align_corners=False)
    return samples.permute(0, 2, 3, 1)


def window_start(height: int, width: int, anchors: torch.Tensor, radius: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left pixel (x, y) [Nb, Q, 2] int64 of the (2r+2)^2 integer-pixel crop under every
    anchor's (2r+1)^2 window on an h x w map, and the anchors' bilinear fractions [Nb, Q, 2]
    (fx, fy) in [0, 1). Anchors [Nb, Q, 2] are model coordinates (u, v), read at level pixel
    (u * w - 0.5, v * h - 0.5) like `sample_map`."""
    size = anchors.new_tensor([width, height])
    pixels = anchors * size - 0.5
    corner = torch.nan_to_num(pixels.detach().floor())  # NaN anchors: NaN fractions, valid rows
    return corner.long() - radius, pixels - corner


def window_indices(height: int, width: int, start: torch.Tensor, radius: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the (2r+2)^2 integer-pixel crops with top-left pixels `start` [Nb, Q, 2]
    (`window_start`) lie in their image's flattened h x w map.

    Returns (index [Nb, Q, 2r+2, 2r+2] into the map flattened per image, clamped onto it;
    inside [Nb, Q, 2r+2, 2r+2] bool, True where the crop pixel lies on the map and False where
    it is zero padding).
    """
    steps = torch.arange(2 * radius + 2, device=start.device)
    columns = start[..., 0, None] + steps  # [Nb, Q, side]
    rows = start[..., 1, None] + steps
    inside = (((columns >= 0) & (columns < width))[..., None, :]
              & ((rows >= 0) & (rows < height))[..., :, None])
    index = (rows.clamp(0, height - 1)[..., :, None] * width
             + columns.clamp(0, width - 1)[..., None, :])
    return index, inside


def blend_crops(crops: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Bilinear blend of neighbouring crop pixels: crops [Nb, Q, S+1, S+1, C] and fractions
    [Nb, Q, 2] -> [Nb, Q, S, S, C] (two `lerp`s over contiguous rows)."""
    batch, queries, crop_side, _, channels = crops.shape
    side = crop_side - 1
    flat = crops.reshape(batch * queries, crop_side, crop_side * channels)
    fx = fractions[..., 0].reshape(-1, 1, 1).to(crops.dtype)
    fy = fractions[..., 1].reshape(-1, 1, 1).to(crops.dtype)
    across = torch.lerp(flat[..., :side * channels], flat[..., channels:], fx)
    blended = torch.lerp(across[:, :-1], across[:, 1:], fy)
    return blended.view(batch, queries, side, side, channels)


def gather_crops(feature_map: torch.Tensor, start: torch.Tensor, radius: int) -> torch.Tensor:
    """The (2r+2)^2 integer-pixel crops [Nb, Q, S, S, C] (S = 2r+2) with top-left pixels
    `start` [Nb, Q, 2] (`window_start`) of maps [Nb, C, h, w], zero off the map: one row of C
    numbers gathered per pixel (the reference crop kernel; `taptr.models.kernels` has a faster
    one)."""
    batch, channels, height, width = feature_map.shape
    index, inside = window_indices(height, width, start, radius)
    table = feature_map.permute(0, 2, 3, 1).reshape(-1, channels)  # one row per pixel
    images = torch.arange(batch, device=start.device).view(batch, 1, 1, 1) * (height * width)
    return F.embedding(index + images, table) * inside[..., None].to(table.dtype)


def sample_window(feature_map: torch.Tensor, anchors: torch.Tensor, radius: int,
                  crops: Callable = gather_crops) -> torch.Tensor:
    """Bilinear samples at every whole-pixel offset of `window_offsets(radius)` from anchors.

    The same values as `sample_map(feature_map, anchors[:, :, None] + offsets / (w, h))` (up to
    float rounding): every sample of a window shares its anchor's fraction, so the window is
    one integer crop (zero off the map; `crops`, e.g. `gather_crops`) blended with two
    `lerp`s, a fraction of `grid_sample`'s cost on a CPU.
    feature_map: [Nb, C, h, w]; anchors: [Nb, Q, 2] -> [Nb, Q, (2r+1)^2, C].
    """
    height, width = feature_map.shape[-2:]
    start, fractions = window_start(height, width, anchors, radius)
    return blend_crops(crops(feature_map, start, radius), fractions).flatten(2, 3)


def window_cosine(feature_map: torch.Tensor, anchors: torch.Tensor, templates: torch.Tensor,
                  radius: int) -> torch.Tensor:
    """Dot products of templates with the window samples of `sample_window`:
    feature_map [Nb, C, h, w], anchors [Nb, Q, 2], templates [Nb, Q, C] -> [Nb, Q, (2r+1)^2].

    By linearity, each template is dotted with every pixel of its map in one batched matrix
    product, and the window is gathered from those scalars and blended: cheaper on a
    CPU than gathering C-channel samples for the small preset's 32x32 stride-8 map. The cost
    grows with Q x h x w, not with the window, so for maps much larger than (2r+2)^2 x C
    pixels `sample_window` and a dot product would be cheaper.
    """
    batch, channels, height, width = feature_map.shape
    start, fractions = window_start(height, width, anchors, radius)
    index, inside = window_indices(height, width, start, radius)
    dots = torch.matmul(templates.to(feature_map.dtype), feature_map.flatten(2))  # [Nb, Q, hw]
    crops = dots.gather(2, index.flatten(2)).view(*index.shape, 1) * inside[..., None].to(
        dots.dtype)
    return blend_crops(crops, fractions).flatten(2)


def window_patch_descriptors(image: torch.Tensor, anchors: torch.Tensor, radius: int,
                             patch_radius: int, crops: Callable = gather_crops) -> torch.Tensor:
    """Zero-mean, unit-norm RGB patches (2p+1)^2 around every offset of
    `window_offsets(radius)` from anchors, each ordered (channel, row, column).

    All (2r+1)^2 patches lie on one (2r+2p+1)^2 grid of input pixels, so that grid is sampled
    once and cut into patches (`F.unfold`): (2r+1)^2 (2p+1)^2 bilinear reads become
    (2r+2p+1)^2, with the same values (every read is at the anchor plus whole pixels;
    tests/reference_correlation.py reads every patch on its own).
    image: [Nb, 3, H, W]; anchors: [Nb, Q, 2] -> [Nb, Q, (2r+1)^2, 3 (2p+1)^2].
    """
    batch, queries, _ = anchors.shape
    side = 2 * (radius + patch_radius) + 1
    region = sample_window(image, anchors, radius + patch_radius, crops)  # [Nb, Q, side^2, 3]
    region = region.reshape(batch * queries, side, side, -1).permute(0, 3, 1, 2)
    patches = F.unfold(region, 2 * patch_radius + 1)  # [Nb*Q, 3 (2p+1)^2, (2r+1)^2]
    patches = patches.transpose(1, 2).reshape(batch, queries, (2 * radius + 1) ** 2, -1)
    return F.normalize(patches - patches.mean(-1, keepdim=True), dim=-1, eps=PATCH_MIN_NORM)


def box_sums(values: torch.Tensor, kernel: int) -> torch.Tensor:
    """Sums over every kernel x kernel box of [M, H, W] maps (valid positions only), from an
    integral image: [M, H - kernel + 1, W - kernel + 1]."""
    integral = F.pad(values, (1, 0, 1, 0)).cumsum(-1).cumsum(-2)
    return (integral[:, kernel:, kernel:] - integral[:, :-kernel, kernel:]
            - integral[:, kernel:, :-kernel] + integral[:, :-kernel, :-kernel])


def correlate_by_shifts(region: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample valid correlation: region [M, C, S, S], weight [M, C, k, k] -> [M, S-k+1,
    S-k+1], as a sum of k^2 shifted products.

    The same numbers as `F.conv2d` with `groups=M` (up to float rounding), without a group
    count that depends on the input: the reference, and the form ONNX export needs
    (`taptr.export`; `taptr.models.kernels` has the convolution).
    """
    kernel = weight.shape[-1]
    out = region.shape[-1] - kernel + 1
    total = None
    for row in range(kernel):
        for col in range(kernel):
            term = region[:, :, row:row + out, col:col + out] * weight[:, :, row, col, None, None]
            total = term if total is None else total + term
    return total.sum(1)  # over channels, once


def window_ncc(image: torch.Tensor, anchors: torch.Tensor, templates: torch.Tensor,
               radius: int, patch_radius: int, ops: "CorrelationOps | None" = None
               ) -> torch.Tensor:
    """Normalised cross-correlation of patch templates at every offset of a window.

    Equals `(window_patch_descriptors(...) * templates[:, :, None]).sum(-1)` without
    materialising the (2r+1)^2 patches: the template being zero-mean, the numerator is a
    convolution of the sampled (2r+2p+1)^2 region with the template (depthwise, per channel),
    and each patch's norm comes from box sums (integral images) of the region and of its
    square.
    image: [Nb, 3, H, W]; anchors: [Nb, Q, 2]; templates: [Nb, Q, 3 (2p+1)^2] zero-mean,
    unit-norm, ordered (channel, row, column). returns [Nb, Q, (2r+1)^2].
    ops: the crop and depthwise-correlation kernels (None: the reference ones).
    """
    batch, queries, _ = anchors.shape
    count = batch * queries
    side = 2 * (radius + patch_radius) + 1
    kernel = 2 * patch_radius + 1
    ops = REFERENCE_CORRELATION_OPS if ops is None else ops
    region = sample_window(image, anchors, radius + patch_radius, ops.window_crops)
    channels = region.shape[-1]
    region = region.reshape(count, side * side * channels)
    # NCC ignores a constant added to the region; removing its mean keeps the box-sum variance
    # (squares - total^2 / taps) from cancelling on low-contrast patches.
    region = region - region.mean(-1, keepdim=True)
    region = region.view(count, side, side, channels).permute(0, 3, 1, 2).contiguous()
    weight = templates.reshape(count, channels, kernel, kernel).to(region.dtype)
    numerator = ops.depthwise_correlation(region, weight).reshape(count, -1)
    taps = channels * kernel * kernel
    total = box_sums(region.sum(1), kernel).view(count, -1)
    squares = box_sums(region.pow(2).sum(1), kernel).view(count, -1)
    norm = (squares - total * total / taps).clamp(min=0).sqrt().clamp(min=PATCH_MIN_NORM)
    return (numerator / norm).clamp(-1.0, 1.0).view(batch, queries, -1)


def peak_subpixel(logits: torch.Tensor, radius: int) -> torch.Tensor:
    """Sub-pixel peak of a (2r+1)^2 window of scores: the best offset, moved by the vertex of
    the parabola through it and its two neighbours along x and along y (at most half a pixel).

    logits: [..., (2r+1)^2] row-major (as `window_offsets`) -> [..., 2] (dx, dy) offsets.
    Differentiable in the scores (not in the choice of the best offset). A peak on the window's
    border is refined with its inner neighbours only (parabola through the border clamped).
    This is how classical template matching reaches sub-pixel precision; a soft-argmax over
    the window is pulled towards its centre.
    """
    side = 2 * radius + 1
    best = logits.argmax(-1)
    row = torch.div(best, side, rounding_mode="floor").clamp(1, side - 2)
    col = (best % side).clamp(1, side - 2)

    def score(d_row: int, d_col: int) -> torch.Tensor:
        return logits.gather(-1, ((row + d_row) * side + col + d_col)[..., None])[..., 0]

    centre = score(0, 0)

    def vertex(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        curvature = before - 2 * centre + after  # negative at a maximum
        safe = curvature.clamp(max=-1e-6)
        shift = 0.5 * (before - after) / safe
        return torch.where(curvature < -1e-6, shift, torch.zeros_like(shift)).clamp(-0.5, 0.5)

    dx = (col - radius).to(logits.dtype) + vertex(score(0, -1), score(0, 1))
    dy = (row - radius).to(logits.dtype) + vertex(score(-1, 0), score(1, 0))
    return torch.stack((dx, dy), -1)


@dataclass(frozen=True)
class CorrelationOps:
    """The replaceable operations of the correlation update: window_crops(feature_map, start,
    radius) as `gather_crops`; depthwise_correlation(region, weight) as
    `correlate_by_shifts`."""

    name: str
    window_crops: Callable
    depthwise_correlation: Callable


REFERENCE_CORRELATION_OPS = CorrelationOps("reference", gather_crops, correlate_by_shifts)


class LocalCorrelation(nn.Module):
    """Correlation maps, templates and the coarse-to-fine correlation update.

    stage_channels: channels of the backbone stages used, ordered coarse to fine; every level
    keeps its channel count. radius: r of the (2r+1)^2 search grid, in level pixels.
    pixel_patch: p > 0 adds the finest level, NCC of (2p+1)^2 patches of the input image,
    searched over a (2 pixel_radius + 1)^2 window of input pixels.
    `ops`: its `CorrelationOps` (the reference ones unless kernels were selected by name).
    Parameters: `projections.{i}` (1x1 convs), `log_scale` (softmax sharpness per level),
    `motion_prior` (per level), `peak_gain`, `peak_threshold` (pixel-level visibility),
    `residual.{i}` (MLP: correlation -> (dx, dy) in level pixels, visibility logit).
    """

    def __init__(self, stage_channels: list[int], radius: int, hidden_dim: int = 64,
                 initial_scale: float = FEATURE_SCALE, pixel_patch: int = 0,
                 pixel_scale: float = PIXEL_SCALE, pixel_radius: int | None = None):
        super().__init__()
        self.pixel_patch = pixel_patch
        self.ops = REFERENCE_CORRELATION_OPS
        pixel_radius = radius if pixel_radius is None else pixel_radius
        self.radii = [radius] * len(stage_channels) + ([pixel_radius] if pixel_patch else [])
        self.projections = nn.ModuleList(nn.Conv2d(c, c, 1) for c in stage_channels)
        self.initial_scales = [initial_scale] * len(stage_channels) + (
            [pixel_scale] if pixel_patch else [])
        self.log_scale = nn.Parameter(torch.tensor(self.initial_scales).log())
        self.initial_priors = [FEATURE_PRIOR] * len(stage_channels) + ([0.0] if pixel_patch else [])
        self.motion_prior = nn.Parameter(torch.tensor(self.initial_priors))
        self.peak_gain = nn.Parameter(torch.tensor(PEAK_GAIN if pixel_patch else 0.0))
        self.peak_threshold = nn.Parameter(torch.tensor(PEAK_THRESHOLD))
        self.residual = nn.ModuleList(
            nn.Sequential(nn.Linear((2 * r + 1) ** 2, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, 3))
            for r in self.radii)
        self.reset_parameters()

    @property
    def num_levels(self) -> int:
        return len(self.log_scale)

    def _is_pixel_level(self, level: int) -> bool:
        return bool(self.pixel_patch) and level == self.num_levels - 1

    def reset_parameters(self) -> None:
        """Identity projections, the initial scales and zero residuals: a pure template
        matcher."""
        with torch.no_grad():
            self.log_scale.copy_(torch.tensor(self.initial_scales).log())
            self.motion_prior.copy_(torch.tensor(self.initial_priors))
            self.peak_gain.fill_(PEAK_GAIN if self.pixel_patch else 0.0)
            self.peak_threshold.fill_(PEAK_THRESHOLD)
            for projection in self.projections:
                channels = projection.weight.shape[0]
                projection.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
                projection.bias.zero_()
            for mlp in self.residual:
                nn.init.kaiming_uniform_(mlp[0].weight, a=math.sqrt(5))
                nn.init.zeros_(mlp[0].bias)
                nn.init.zeros_(mlp[2].weight)
                nn.init.zeros_(mlp[2].bias)

    def maps(self, stages: list[torch.Tensor], frames: torch.Tensor) -> list[torch.Tensor]:
        """Backbone stages [Nb, C_i, h_i, w_i] (coarse to fine) and the input frames
        [Nb, 3, H, W] -> per level: normalised feature maps (same shapes), then the frames
        themselves for the pixel level."""
        with torch.autocast(frames.device.type, enabled=False):
            maps = [F.normalize(projection(stage.float()), dim=1)
                    for projection, stage in zip(self.projections, stages)]
        if self.pixel_patch:
            maps.append(frames.float().contiguous())
        return maps

    def templates(self, maps: list[torch.Tensor], points: torch.Tensor) -> list[torch.Tensor]:
        """Templates of points [Nb, N, 2] (model coordinates) -> per level [Nb, N, D] (unit)."""
        templates = []
        for level, feature_map in enumerate(maps):
            if self._is_pixel_level(level):
                read = window_patch_descriptors(feature_map, points, 0, self.pixel_patch,
                                                self.ops.window_crops)
            else:
                read = sample_map(feature_map, points[:, :, None])
            templates.append(F.normalize(read[:, :, 0], dim=-1, eps=PATCH_MIN_NORM))
        return templates

    def update(self, positions: torch.Tensor, maps: list[torch.Tensor],
               templates: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Move points by correlation, coarse to fine.

        positions: [Nb, N, 2] model coordinates; the result is `positions` plus every level's
        shift, so gradients reach both (only the sampling locations are detached).
        maps: per level [Nb, C, h, w]; templates: per level [Nb, N, C].
        returns (new positions [Nb, N, 2], visibility logit offset [Nb, N]), float32: the
        update always runs in float32, since under bf16/fp16 autocast the NCC differences that
        pick the peak (0.01 and less) would be rounded away.
        """
        with torch.autocast(positions.device.type, enabled=False):
            return self._update(positions.float(), [m.float() for m in maps],
                                [t.float() for t in templates])

    def _update(self, positions: torch.Tensor, maps: list[torch.Tensor],
                templates: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """`update` on float32 inputs with autocast off."""
        visibility = positions.new_zeros(positions.shape[:-1])
        # `current` is the incoming position plus every level's shift, all with their gradients:
        # the supervised result trains every level and whatever produced `positions` (APU,
        # position head). Each level samples at a detached copy (no gradient through the
        # sampling location, as in RAFT).
        current = positions
        for level, (feature_map, template) in enumerate(zip(maps, templates)):
            size = positions.new_tensor([feature_map.shape[-1], feature_map.shape[-2]])  # (w, h)
            anchor = current.detach()
            radius = self.radii[level]
            offsets = window_offsets(radius, positions.device, positions.dtype)  # [K, 2]
            distance2 = offsets.pow(2).sum(-1)  # [K]
            if self._is_pixel_level(level):  # NCC on the input image
                correlation = window_ncc(feature_map, anchor, template, radius,
                                         self.pixel_patch, self.ops)  # [Nb, N, K]
            else:  # cosine similarity of features
                correlation = window_cosine(feature_map, anchor, template, radius)
            logits = correlation * self.log_scale[level].exp() - self.motion_prior[level] * distance2
            if self._is_pixel_level(level):
                expected = peak_subpixel(logits, radius)  # level pixels
            else:
                expected = (logits.softmax(-1)[..., None] * offsets).sum(-2)
            learned = self.residual[level](correlation)
            shift = (expected + learned[..., :2]) / size
            current = current + shift
            visibility = visibility + learned[..., 2]
            if self._is_pixel_level(level):
                peak = correlation.max(-1).values
                visibility = visibility + self.peak_gain * (peak - self.peak_threshold)
        return current, visibility
