"""The network a run trains: built from the preset, started from pretrained weights, with the
parameters that do not train frozen (the `model` and `optim` sections of `TrainConfig`).

Frozen parameters get no gradient and no optimizer state, and no backward runs through a frozen
backbone (several times faster per step on a CPU). Pretrained parts: `init_weights` (a whole
network of ours, safetensors) and `init_backbone` (ImageNet weights, `training.pretrained`).
"""

from __future__ import annotations

import logging

from torch import nn

from taptr.config import ModelConfig
from taptr.errors import TaptrError
from taptr.text import count

logger = logging.getLogger(__name__)


def load_initial_weights(model: nn.Module, name_or_path: str) -> None:
    """Start from a full set of weights (fine-tuning): a registered name, our `.safetensors`
    or an official `.pth`, loaded by `taptr.load_model`; their config must be the model's."""
    from taptr.loading import load_model
    from taptr.models.state_dict import load_state_strict

    stored = load_model(name_or_path)
    if not isinstance(stored, nn.Module):
        raise TaptrError(f"{name_or_path} is an ONNX export: fine-tuning starts from "
                         ".safetensors or .pth weights")
    if stored.config.to_dict() != model.config.to_dict():
        raise TaptrError(f"{name_or_path} holds a {stored.config.name!r} model that differs "
                         f"from the {model.config.name!r} preset being trained")
    load_state_strict(model, stored.state_dict())


def freeze_parameters(model: nn.Module, lr_backbone: float, train_only: tuple[str, ...]) -> None:
    """No gradient for the backbone when lr_backbone is 0, and for every parameter outside
    `train_only` (name prefixes) when it is given. Raises TaptrError for a prefix that names
    no parameter. Prefixes of older parameter names (e.g. 'decoder.correlation', now under
    'hooks.correlation') still select (`TAPTRv2.upgrade_key`)."""
    matched = set()
    upgrade = getattr(model, "upgrade_key", lambda key: key)
    current = {prefix: upgrade(prefix) for prefix in train_only}
    for name, parameter in model.named_parameters():
        prefixes = {prefix for prefix in train_only if name.startswith(current[prefix])}
        matched |= prefixes
        outside = bool(train_only) and not prefixes
        if (lr_backbone == 0 and "backbone" in name) or outside:
            parameter.requires_grad_(False)
    unmatched = sorted(set(train_only) - matched)
    if unmatched:
        raise TaptrError(f"optim.train_only: no parameter name starts with {unmatched}")


def prepare_model(config, model_config: ModelConfig, model: nn.Module | None = None,
                  pretrained: bool = True) -> nn.Module:
    """The network of a run: `model` or `build_model(model_config)`, then (when `pretrained`,
    i.e. not on resume) `init_weights` and `init_backbone`, then the freezing; the tracking
    options of `config.model.options` become the model's defaults."""
    from taptr.models import TrackingOptions, build_model

    model = model if model is not None else build_model(model_config)
    if config.model.options:
        defaults = getattr(model, "default_options", None) or TrackingOptions()
        model.default_options = defaults.with_overrides(list(config.model.options))
    if pretrained and config.model.init_weights:
        load_initial_weights(model, config.model.init_weights)
        logger.info(f"weights initialised from {config.model.init_weights}")
    if pretrained and config.model.init_backbone:
        from taptr.training.pretrained import load_backbone_weights

        report = load_backbone_weights(model, config.model.init_backbone)
        loaded = count(len(report["loaded"]), "entry", "entries")
        logger.info(f"backbone initialised from {config.model.init_backbone}: {loaded}, "
                    f"{len(report['skipped'])} skipped")
    freeze_parameters(model, config.optim.lr_backbone, config.optim.train_only)
    return model
