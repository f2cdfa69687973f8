"""Training losses of TAPTRv2 (docs/architecture.md, section 6.1).

* Location: L1 on (u, v) of every decoder layer's stitched positions and of every layer's APU
  positions, weight 5 each, masked by U (frames strictly after the query frame) and by the
  ground truth lying in [0, 1]^2; occluded points are supervised too. Each term is
  sum over the mask of (|du| + |dv|) / (mask count + 1).
* Visibility: sigmoid focal loss (alpha 0.25, gamma 2) on the last layer's 3 logits against a
  one-hot target (channel 1 visible, channel 2 occluded, channel 0 always negative), masked by
  U only; sum over the mask and the 3 channels / (mask count + 1).
* Ours, optional (`tracked_threshold_px` > 0): the visibility target becomes "visible and the
  last layer's position lies within `tracked_threshold_px` input pixels of the ground truth",
  so a point the model has lost is taught to be called occluded, which is what Average
  Jaccard rewards (a visible point predicted far off counts as a false positive and a false
  negative; called occluded it is a false negative only). TAPIR's uncertainty head learns the
  same event.

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


LOSS_LAYERS = ("all", "last")  # which decoder layers' positions are supervised


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms and focal-loss parameters (official values): `location`
    weighs the L1 of every decoder layer's positions, `apu` that of every layer's APU
    positions, `visibility` the focal loss, whose `focal_alpha` weighs visible targets against
    occluded ones and `focal_gamma` damps easy examples."""

    location: float = 5.0
    apu: float = 5.0
    # Ours: supervise the positions (and APU positions) of 'all' decoder layers (official) or of
    # the 'last' one only.
    layers: str = "all"

    def __post_init__(self) -> None:
        if self.layers not in LOSS_LAYERS:
            raise ValueError(f"layers must be 'all' or 'last', got {self.layers!r}")
    visibility: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


def loss_part_names(num_layers: int) -> list[str]:
    """Names of the parts `tracking_loss` reports, in a fixed order (for log headers)."""
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


def masked_l1(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
              cap: float = 0.0) -> torch.Tensor:
    """sum over the mask of |du| + |dv| (capped at `cap` when > 0), divided by
    (mask count + 1).

    predicted, target [..., 2]; mask [...] bool -> scalar float32. Masked-out entries may hold
    anything, NaN included.
    """
    distance = (predicted.float() - target.float()).abs().sum(dim=-1)
    if cap > 0:
        distance = distance.clamp(max=cap)
    distance = torch.where(mask, distance, torch.zeros_like(distance))
    return distance.sum() / (mask.sum() + 1)


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
    per_entry = torch.where(mask, per_entry, torch.zeros_like(per_entry))
    return per_entry.sum() / (mask.sum() + 1)


def tracked_targets(positions: torch.Tensor, tracks: torch.Tensor, visible: torch.Tensor,
                    threshold_px: float, input_size: tuple[int, int]) -> torch.Tensor:
    """Ours: the AJ-aligned visibility target, visible and tracked.

    positions, tracks [..., 2] (model units), visible [...] bool, threshold_px (input pixels),
    input_size (W_in, H_in) of the network -> [...] bool: visible and |positions - tracks|
    (Euclidean, in input pixels, `coords.model_to_input`) < threshold_px. No gradient flows
    through it.
    """
    offset = coords.model_to_input(positions.detach().float() - tracks.float(), input_size)
    distance = offset.norm(dim=-1)
    return visible & (distance < threshold_px)


def tracking_loss(outputs, batch: dict[str, torch.Tensor], weights: LossWeights = LossWeights(),
                  location_cap: float = 0.0, tracked_threshold_px: float = 0.0,
                  input_size: tuple[int, int] | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total training loss and its parts.

    outputs: the network's `TrackOutput` with `return_layers=True`: `layer_positions` and
    `layer_apu_positions` [L, B, T, N, 2], `layer_vis_logits` [L, B, T, N, C].
    batch: `make_batch` output (`tracks` [B, T, N, 2], `visible` [B, T, N], `query_frames`
    [B, N], `valid` [B, N]).
    location_cap (ours; 0 = the official plain L1): each point-frame's |du| + |dv| is capped at
    this many model units, so points the model has lost give no gradient and the loss rewards
    precision on the ones it tracks (docs/training.md, "Fine-tuning a model that already
    tracks").
    tracked_threshold_px (ours; 0 = the official occlusion target): the visibility target is
    `tracked_targets` of the last layer's positions at this distance in input pixels
    (`input_size`: (W_in, H_in), needed then).
    Returns (total, parts): total is a scalar with gradient; parts holds detached unweighted
    scalars named by `loss_part_names` (`loc`/`apu` are the sums over the supervised layers:
    all, or the last with `weights.layers == "last"`).
    """
    tracks, visible = batch["tracks"], batch["visible"]
    update_mask = tracking_mask(batch["query_frames"], tracks.shape[1], batch.get("valid"))
    location_mask = update_mask & coords.in_unit_square(tracks)

    parts: dict[str, torch.Tensor] = {}
    cap = location_cap
    location_terms = [masked_l1(layer, tracks, location_mask, cap)
                      for layer in outputs.layer_positions]
    apu_terms = [masked_l1(layer, tracks, location_mask, cap)
                 for layer in outputs.layer_apu_positions]
    if tracked_threshold_px > 0:
        if input_size is None:
            raise ValueError("tracked_threshold_px needs the network's input_size")
        visible = tracked_targets(outputs.layer_positions[-1], tracks, visible,
                                  tracked_threshold_px, input_size)
    visibility = visibility_focal_loss(
        outputs.layer_vis_logits[-1], visible, update_mask, weights.focal_alpha, weights.focal_gamma
    )
    supervised = slice(None) if weights.layers == "all" else slice(-1, None)
    location_total = torch.stack(location_terms[supervised]).sum()
    apu_total = torch.stack(apu_terms[supervised]).sum()
    total = (weights.location * location_total + weights.apu * apu_total
             + weights.visibility * visibility)

    for layer, term in enumerate(location_terms):
        parts[f"loc_{layer}"] = term.detach()
    for layer, term in enumerate(apu_terms):
        parts[f"apu_{layer}"] = term.detach()
    parts["loc"] = location_total.detach()
    parts["apu"] = apu_total.detach()
    parts["vis"] = visibility.detach()
    return total, parts
