"""`build_model`: a TAPTRv2 network with our additions attached as hooks, its default tracking
options, and its kernels chosen by name."""

from __future__ import annotations

from taptr.config import ModelConfig
from taptr.models.additions import build_hooks
from taptr.models.additions.init_tracking import init_for_tracking
from taptr.models.kernels import use_kernels
from taptr.models.options import TrackingOptions
from taptr.models.registry import default_options, get_preset
from taptr.models.taptrv2.backbone import backbone_stage_channels
from taptr.models.taptrv2.model import TAPTRv2


def build_model(config: ModelConfig | str, options: TrackingOptions | None = None,
                kernels: str = "fast") -> TAPTRv2:
    """A randomly initialised TAPTRv2 for a config or preset name, with our additions attached
    as hooks (`taptr.models.additions.build_hooks`).

    options: its default tracking options (None: those registered for the config's name,
    `taptr.models.registry.default_options`); kernels:
    `taptr.models.kernels.KERNELS` ('fast': autograd-safe, the training default). Configs
    with `initialisation="tracking"` get `init_for_tracking` (ours) on top of the official
    initialisation. Raises `TaptrError` for an unknown preset or kernels.
    """
    if isinstance(config, str):
        config = get_preset(config)
    model = TAPTRv2(config, build_hooks(config, backbone_stage_channels(config.backbone)))
    model.default_options = options if options is not None else default_options(config.name)
    if config.initialisation == "tracking":
        init_for_tracking(model)
    return use_kernels(model, kernels)
