"""Our own weights: safetensors files whose metadata holds the full model config.

`save_weights(model, path)` writes one; `load_weights(path)` rebuilds the model from the file
alone. Named weights (the bundled `taptr-small` in `taptr/assets/`) are entries of the one
registry, `taptr.models.registry`; `resolve_weights` finds their files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from taptr.config import ModelConfig
from taptr.errors import TaptrError
from taptr.io.atomic import atomic_path

def resolve_weights(name_or_path: str | os.PathLike | None) -> Path:
    """A registered name with a weights file (None: the default, `DEFAULT_MODEL`) or a path ->
    an existing file path. Raises `TaptrError` naming the registered weights otherwise."""
    from taptr.models.registry import DEFAULT_MODEL, get_entry, is_registered, list_models

    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    if is_registered(name_or_path) and get_entry(name_or_path).weights is not None:
        path = get_entry(name_or_path).weights
        if not path.is_file():
            raise TaptrError(f"the weights of {name_or_path!r} are not in this installation "
                             f"(expected {path})")
        return path
    path = Path(name_or_path)
    if path.is_file():
        return path
    raise TaptrError(f"weights not found: {str(name_or_path)!r} is neither a file nor the "
                     f"name of registered weights ({', '.join(list_models(pretrained=True))})")


def save_weights(model, path: str | os.PathLike, dtype: torch.dtype | None = None,
                 extra_metadata: dict[str, str] | None = None) -> Path:
    """Write the model's state dict (optionally cast, e.g. fp16) with its config; atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    metadata = {"format": "taptr", "config": model.config.to_json()}
    if getattr(model, "default_options", None) is not None:
        metadata["tracking_options"] = model.default_options.to_json()
    metadata.update(extra_metadata or {})
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path


def read_weights_config(path: str | os.PathLike) -> ModelConfig:
    return read_weights_metadata(path)[0]


def read_weights_metadata(path: str | os.PathLike):
    """(ModelConfig, default TrackingOptions) stored in a weights file. Files written before
    the tracking options kept them in the config (`TrackingOptions.from_legacy_config`)."""
    from taptr.models.options import TrackingOptions

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # noqa: BLE001 - any unreadable file is a user error
        raise TaptrError(f"cannot read weights {path}: {error}") from None
    if "config" not in metadata:
        raise TaptrError(f"{path} holds no taptr model config in its metadata")
    values = json.loads(metadata["config"])
    if "tracking_options" in metadata:
        options = TrackingOptions.from_dict(json.loads(metadata["tracking_options"]))
    else:
        options = TrackingOptions.from_legacy_config(values)
    return ModelConfig.from_dict(values), options


def load_weights(name_or_path=None, device=None):
    """Build the model stored in one of our weights files (a path, or a registered name with a
    weights file; None: the default); returns it in eval mode. Any weights a user names
    (official checkpoints, ONNX exports too) load through `taptr.load_model`."""
    from taptr.models import build_model
    from taptr.models.state_dict import load_state_strict

    path = resolve_weights(name_or_path)
    config, options = read_weights_metadata(path)
    model = build_model(config, options)
    state = load_file(str(path))  # older keys are renamed by load_state_strict
    load_state_strict(model, {k: v.float() if v.is_floating_point() else v
                              for k, v in state.items()})
    return model.to(device or "cpu").eval()
