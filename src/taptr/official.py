"""Official TAPTRv2 checkpoints (`taptrv2.pth`): key mapping and safe loading.

The official file is a `torch.save` pickle of a dict whose `ema_model` entry holds the weights
(614 entries, 40 of them aliases of the decoder heads); it also pickles an
`argparse.Namespace`. We load it with `torch.load(weights_only=True)` and only that class on the
allow-list, map every key onto our module names and refuse anything missing, unexpected or of
the wrong shape, naming the keys.
"""

from __future__ import annotations

import argparse
import os
import re

import torch

from taptr.errors import TaptrError
from taptr.io.torch_files import load_tensors
from taptr.models.registry import get_preset
from taptr.models.state_dict import load_state_strict, name_list

# (official prefix, our prefix), first match wins.
KEY_PREFIXES = (
    ("backbone.0.body.", "backbone."),
    ("transformer.level_embed", "level_embed"),
    ("transformer.encoder.", "encoder."),
    ("transformer.decoder.layers.", "decoder.layers."),
    ("transformer.decoder.ref_point_head.", "decoder.ref_point_head."),
    ("transformer.decoder.ca_update_fuser.", "decoder.ca_update_fuser."),
    ("transformer.decoder.query_updater.", "decoder.query_updater."),
    ("transformer.query_feature_initializer.", "query_initializer."),
    ("query_between_window_updater.", "window_updater."),
    ("bbox_embed.", "decoder.position_heads."),
    ("class_embed.", "decoder.visibility_heads."),
    ("input_proj.", "input_proj."),
)
# Official aliases: the same head tensors registered a second time under the decoder.
ALIAS_PREFIXES = (("transformer.decoder.bbox_embed.", "bbox_embed."),
                  ("transformer.decoder.class_embed.", "class_embed."))
SAFE_GLOBALS = [argparse.Namespace]


def official_to_ours(name: str) -> str | None:
    """Our parameter name for an official key (None for keys we do not know)."""
    for official, ours in KEY_PREFIXES:
        if name.startswith(official):
            return ours + name[len(official):]
    return None


def ours_to_official(name: str) -> str | None:
    for official, ours in KEY_PREFIXES:
        if name.startswith(ours):
            return official + name[len(ours):]
    return None


def read_official_checkpoint(path: str | os.PathLike, entry: str = "ema_model") -> dict:
    """The official state dict (`ema_model` by default) from a `.pth` file, loaded safely."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TaptrError(f"checkpoint not found: {path}")
    checkpoint = load_tensors(path, "an official TAPTRv2 checkpoint", allowed=SAFE_GLOBALS)
    if isinstance(checkpoint, dict) and entry in checkpoint:
        return checkpoint[entry]
    if isinstance(checkpoint, dict) and entry == "ema_model" and "model" in checkpoint:
        raise TaptrError(f"{path} has no 'ema_model' entry; pass entry='model' to use 'model'")
    if isinstance(checkpoint, dict) and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint  # a bare state dict
    raise TaptrError(f"{path} is not an official TAPTRv2 checkpoint (no {entry!r} entry)")


def convert_official_state_dict(official_state: dict) -> dict[str, torch.Tensor]:
    """Map an official state dict onto our names; check aliases; raise on unknown keys."""
    state = {re.sub(r"^module\.", "", k): torch.as_tensor(v) for k, v in official_state.items()}
    converted, unknown, mismatched_aliases = {}, [], []
    for name, tensor in state.items():
        alias_of = next((target + name[len(alias):] for alias, target in ALIAS_PREFIXES
                         if name.startswith(alias)), None)
        if alias_of is not None:
            if alias_of in state and not torch.equal(state[alias_of], tensor):
                mismatched_aliases.append(name)
            elif alias_of not in state:
                converted[official_to_ours(alias_of)] = tensor
            continue
        ours = official_to_ours(name)
        if ours is None:
            unknown.append(name)
        else:
            converted[ours] = tensor
    if unknown:
        raise TaptrError(f"unexpected keys in official checkpoint: {name_list(unknown)}")
    if mismatched_aliases:
        raise TaptrError(f"aliased head tensors differ from their originals: "
                         f"{name_list(mismatched_aliases)}")
    return converted


def load_official(path_or_state_dict, official_compat: bool = False, entry: str = "ema_model"):
    """Build the paper model and load official weights into it.

    path_or_state_dict: path to `taptrv2.pth` or an official-format state dict (tensors or
    arrays). official_compat: reproduce the official quirks exactly (docs/architecture.md,
    section 9.2).
    """
    from taptr.models import build_model

    if isinstance(path_or_state_dict, (str, os.PathLike)):
        official_state = read_official_checkpoint(path_or_state_dict, entry)
    else:
        official_state = path_or_state_dict
    config = get_preset("taptrv2").replace(official_compat=official_compat)
    model = build_model(config)
    state = convert_official_state_dict(official_state)
    load_state_strict(model, state, describe=lambda k: ours_to_official(k) or k)
    return model.eval()
