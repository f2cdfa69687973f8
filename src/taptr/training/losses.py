"""Training losses of TAPTRv2 (docs/architecture.md, section 6.1): `TrackingCriterion`.

One criterion object (like DETR's SetCriterion) computes the total loss and its parts from the
network's `TrackOutput` and a `make_batch` batch:

* Location: L1 of every decoder layer's stitched positions and of every layer's APU positions
  against the ground truth, masked by U (frames strictly after the query frame) and by the
  ground truth lying on the network input; occluded points are supervised too. Each term is
  sum over the mask / (mask count + 1).
* Visibility: sigmoid focal loss (alpha 0.25, gamma 2) on the last layer's 3 logits against a
  one-hot target (channel 1 visible, channel 2 occluded, channel 0 always negative), masked by
  U only; sum over the mask and the 3 channels / (mask count + 1).

**One unit: input pixels.** Positions and targets are converted once, at the criterion's
entry, from model coordinates to pixels of the network input (`coords.model_to_input`); every
location error, the cap (ours, `location_cap_px`) and the reported parts (`loc_L`, `apu_L`,
`loc`, `apu`) are in input pixels. The paper's weight 5 is per model unit, that is 5 / (W_in -
1) per input pixel along x and 5 / (H_in - 1) along y (`coords.input_to_model` of the
weights): the total is the paper's loss, whatever the unit of the parts.

Counts run over the whole batch (the official code trains with B = 1 per process, where this is
the same thing). Losses are computed in float32 whatever the autocast dtype of the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from taptr import coords

VISIBLE_CHANNEL = 1
OCCLUDED_CHANNEL = 2


@dataclass(frozen=True)
class LossWeights:
    """The paper's weights of the loss terms and focal-loss parameters: `location` weighs the
    L1 of every decoder layer's positions and `apu` that of every layer's APU positions (per
    model unit), `visibility` the focal loss, whose `focal_alpha` weighs visible targets
    against occluded ones and `focal_gamma` damps easy examples."""

    location: float = 5.0
    apu: float = 5.0
    visibility: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


def loss_part_names(num_layers: int) -> list[str]:
    """Names of the parts `TrackingCriterion` reports, in a fixed order (for log headers)."""
    names = [f"loc_{layer}" for layer in range(num_layers)]
    names += [f"apu_{layer}" for layer in range(num_layers)]
    return names + ["loc", "apu", "vis"]


def tracking_mask(query_frames: torch.Tensor, num_frames: int,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """U: frames strictly after each point's query frame.

    query_frames [B, N] int64, valid [B, N] bool or None -> [B, T, N] bool.
    """
    frames = torch.arange(num_frames, device=query_frames.device)
    mask = frames[None, :, None] > query_frames[:, None, :]
    if valid is not None:
        mask = mask & valid[:, None, :]
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum of `values` over the mask / (mask count + 1): the official normalisation.

    values, mask [...] -> scalar. Masked-out entries may hold anything, NaN included.
    """
    return torch.where(mask, values, torch.zeros_like(values)).sum() / (mask.sum() + 1)


def location_errors(predicted_px: torch.Tensor, target_px: torch.Tensor,
                    axis_weights: torch.Tensor, cap_px: float = 0.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point-frame location error in input pixels and its weighted (objective) form.

    predicted_px, target_px [..., 2] input pixels; axis_weights [2] per pixel along x and y.
    Returns (pixels, weighted), both [...]: pixels = |dx| + |dy|, weighted = the same with
    each axis weighted. With cap_px > 0 (ours) an error above cap_px pixels is held at the
    cap: its value is the cap (weighted along its own direction) and it gives no gradient.
    """
    error = (predicted_px.float() - target_px.float()).abs()
    pixels = error.sum(dim=-1)
    weighted = (error * axis_weights).sum(dim=-1)
    if cap_px > 0:
        lost = pixels > cap_px
        held = (weighted * cap_px / pixels.clamp(min=cap_px)).detach()
        pixels = torch.where(lost, torch.full_like(pixels, cap_px), pixels)
        weighted = torch.where(lost, held, weighted)
    return pixels, weighted


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor,
                       alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al.; the DETR/torchvision form).

    logits, targets [...] (targets in {0, 1}) -> [...] float32:
    alpha_t * (1 - p_t)^gamma * BCE(logits, targets), alpha_t = alpha for positives and
    1 - alpha for negatives (alpha < 0 disables the weighting).
    """
    logits = logits.float()
    targets = targets.float()
    probability = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    probability_true = probability * targets + (1 - probability) * (1 - targets)
    loss = cross_entropy * (1 - probability_true) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def visibility_targets(visible: torch.Tensor, num_channels: int = 3) -> torch.Tensor:
    """visible [...] bool -> one-hot [..., num_channels] float (1: visible, 2: occluded)."""
    labels = torch.where(visible, VISIBLE_CHANNEL, OCCLUDED_CHANNEL)
    return F.one_hot(labels, num_channels).float()


def visibility_focal_loss(logits: torch.Tensor, visible: torch.Tensor, mask: torch.Tensor,
                          alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss summed over masked entries and all channels / (mask count + 1).

    logits [B, T, N, C], visible [B, T, N] bool, mask [B, T, N] bool -> scalar float32.
    """
    targets = visibility_targets(visible, logits.shape[-1])
    per_entry = sigmoid_focal_loss(logits, targets, alpha, gamma).sum(dim=-1)
    return masked_mean(per_entry, mask)


class TrackingCriterion:
    """The training loss of TAPTRv2 (docs/architecture.md, section 6.1), in input pixels.

    input_size: (H_in, W_in) of the network (`ModelConfig.input_size`). weights: the paper's
    (`LossWeights`). location_cap_px (ours; 0 = the official plain L1): each point-frame's
    |dx| + |dy| is capped at this many input pixels, so points the model has lost give no
    gradient and the loss rewards precision on the ones it tracks (docs/training.md,
    "Fine-tuning a model that already tracks").

    `criterion(outputs, batch)` -> (total, parts). outputs: the network's `TrackOutput` with
    `return_layers=True` (`layer_positions`, `layer_apu_positions` [L, B, T, N, 2] model
    coordinates, `layer_vis_logits` [L, B, T, N, C]); batch: `make_batch` output (`tracks`
    [B, T, N, 2] model coordinates, `visible` [B, T, N], `query_frames` [B, N], `valid`
    [B, N]). total: scalar with gradient; parts: detached unweighted scalars named by
    `loss_part_names` (location parts in input pixels, `loc`/`apu` their sums over layers).
    """

    def __init__(self, input_size: tuple[int, int], weights: LossWeights = LossWeights(),
                 location_cap_px: float = 0.0):
        self.input_wh = (int(input_size[1]), int(input_size[0]))
        self.weights = weights
        self.location_cap_px = float(location_cap_px)

    def to_pixels(self, points: torch.Tensor) -> torch.Tensor:
        """Model coordinates [..., 2] -> input pixels (the one conversion of the loss)."""
        return coords.model_to_input(points.float(), self.input_wh)

    def __call__(self, outputs, batch: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        update_mask = tracking_mask(batch["query_frames"], batch["tracks"].shape[1],
                                    batch.get("valid"))
        location_mask = update_mask & coords.in_unit_square(batch["tracks"])
        tracks = self.to_pixels(batch["tracks"])
        per_pixel = coords.input_to_model(torch.ones(2, device=tracks.device), self.input_wh)
        location, location_objective = self._layer_terms(outputs.layer_positions, tracks,
                                                         location_mask, per_pixel)
        apu, apu_objective = self._layer_terms(outputs.layer_apu_positions, tracks,
                                               location_mask, per_pixel)
        visibility = visibility_focal_loss(outputs.layer_vis_logits[-1], batch["visible"],
                                           update_mask, self.weights.focal_alpha,
                                           self.weights.focal_gamma)
        total = (self.weights.location * torch.stack(location_objective).sum()
                 + self.weights.apu * torch.stack(apu_objective).sum()
                 + self.weights.visibility * visibility)
        parts = {f"loc_{layer}": term.detach() for layer, term in enumerate(location)}
        parts.update({f"apu_{layer}": term.detach() for layer, term in enumerate(apu)})
        parts["loc"] = torch.stack(location).sum().detach()
        parts["apu"] = torch.stack(apu).sum().detach()
        parts["vis"] = visibility.detach()
        return total, parts

    def _layer_terms(self, layers: torch.Tensor, tracks_px: torch.Tensor, mask: torch.Tensor,
                     per_pixel: torch.Tensor) -> tuple[list, list]:
        """Per decoder layer: (mean error in input pixels, the objective's weighted mean)."""
        pixels, objective = [], []
        for positions in layers:
            errors, weighted = location_errors(self.to_pixels(positions), tracks_px, per_pixel,
                                               self.location_cap_px)
            pixels.append(masked_mean(errors, mask))
            objective.append(masked_mean(weighted, mask))
        return pixels, objective
