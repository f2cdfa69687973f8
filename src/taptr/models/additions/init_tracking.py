"""`init_for_tracking`: our initialisation of the small presets (not the paper's).

Under the official (Deformable-DETR) initialisation an untrained TAPTRv2 holds every point still
and calls it occluded; learning to move it takes far more compute than a CPU has. This
initialisation makes the untrained network a tracker, so that training starts from "follows
texture" instead of from "stands still" (measurements: docs/training_runs/):

* the local correlation update (`CorrelationUpdate`, ours) starts as a pure coarse-to-fine
  template matcher: identity feature projections, zero learned residual;
* the Attention-based Position Update starts neutral: sampling offsets are the fixed
  Deformable-DETR star pattern (offset weights zero) and the APU weight regressor outputs equal
  weights, so the weighted mean offset is exactly zero until training moves it;
* the position heads already start at zero (official);
* the visibility heads start at "visible" (logit +2 instead of the official prior of 0.01), and
  the occluded channel at -2.

The official-weights path never calls this: `build_model` applies it only to configs with
`initialisation="tracking"`, and loading weights replaces every value it sets.
"""

from __future__ import annotations

import torch
from torch import nn

VISIBLE_LOGIT = 2.0


@torch.no_grad()
def init_for_tracking(model: nn.Module) -> nn.Module:
    """Apply our tracking initialisation to a freshly built TAPTRv2 (in place); returns it."""
    decoder = model.decoder
    if "correlation" in model.hooks:
        model.hooks["correlation"].reset_parameters()
    for layer in decoder.layers:
        layer.cross_attn.sampling_offsets.weight.zero_()
        regressor = layer.caupdate_weight_regressor[0]
        regressor.weight.zero_()
        regressor.bias.zero_()
    for head in decoder.visibility_heads:
        head.weight.zero_()
        head.bias.fill_(-VISIBLE_LOGIT)
        head.bias[1] = VISIBLE_LOGIT
    return model
