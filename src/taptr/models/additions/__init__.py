"""Our additions to TAPTRv2 (not in the paper), each attached to the paper's network through
the hook interface (`taptr.models.taptrv2.hooks`):

* `correlation_update.CorrelationUpdate`: the local correlation update after every decoder
  layer, with its template refresh (math in `correlation.py`; docs/correlation.md);
* `flow_prior.FlowPrior`: a dense optical-flow prior for the frames a window decodes first
  (docs/flow_prior.md);
* `motion_correction.MotionCorrection`: neighbour motion correction after each window
  (docs/motion_correction.md);
* `init_tracking.init_for_tracking`: our initialisation, under which the untrained network
  already tracks (used when a model is built, not a hook).

Which hooks run in a stream is a tracking option (`taptr.models.options.TrackingOptions`).
"""

from __future__ import annotations

from taptr.config import ModelConfig
from taptr.models.additions.correlation_update import CorrelationUpdate
from taptr.models.additions.flow_prior import FlowPrior
from taptr.models.additions.motion_correction import MotionCorrection
from taptr.models.taptrv2.hooks import TrackingHook


def build_hooks(config: ModelConfig, stage_channels: list[int]) -> list[TrackingHook]:
    """The hooks of a network with this architecture, in the order the stream calls them:
    the flow prior (every network; off unless the options turn it on), the motion correction
    (every network; off unless the options set a threshold), then the
    correlation update where `config.correlation_stages` is not empty (its templates refresh
    from the corrected positions). stage_channels: the backbone's 4 stage widths."""
    hooks: list[TrackingHook] = [FlowPrior(config.input_size),
                                 MotionCorrection(config.input_size)]
    if config.correlation_stages:
        hooks.append(CorrelationUpdate.from_config(config, stage_channels))
    return hooks
