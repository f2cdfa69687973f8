"""The one loader: a model from a registered name or a path (`load_model`), and a registered
model with or without its weights (`create_model`, as timm's `create_model`).

`Tracker.from_pretrained`, `taptr track/demo/eval/export/app` and `taptr train`'s
`model.init_weights` all load through `load_model`. The names are those of the registry
(`taptr.models.registry`); this module holds the I/O (weights files, official checkpoints,
ONNX exports), which the registry and the model package do not.
"""

from __future__ import annotations

import os
from pathlib import Path

from taptr.errors import TaptrError
from taptr.models.registry import DEFAULT_MODEL, get_entry, is_registered, list_models


def create_model(name: str, pretrained: bool = True):
    """The model registered as `name`: its weights file loaded (pretrained) or its preset with
    random weights (`build_model`, in train mode), with the name's default tracking options;
    on the CPU, in eval mode when pretrained.

    Raises `TaptrError` for an unknown name (listing the registered ones), for pretrained with
    a name that has no weights file (listing those that have), or for a registered file that
    is missing from this installation.
    """
    from taptr.models import build_model

    entry = get_entry(name)
    if not pretrained:
        return build_model(entry.config(), entry.options)
    if entry.weights is None:
        raise TaptrError(f"{name!r} is a preset without a weights file: {entry.description}; "
                         f"registered weights: {', '.join(list_models(pretrained=True))}")
    from taptr.weights import load_weights

    model = load_weights(name)
    model.default_options = entry.options
    return model


def load_model(name_or_path: str | os.PathLike | None = None):
    """A model, on the CPU in eval mode, from:

    * None: the default (`DEFAULT_MODEL`, the bundled `taptr-small`);
    * a registered name with a weights file (`taptr.models.registry.list_models(pretrained=True)`);
    * a `.safetensors` file of ours (`taptr.weights.load_weights`);
    * an official checkpoint, `.pth`/`.pt` (`taptr.official.load_official`);
    * a folder written by `taptr export --format onnx` (an `OnnxTAPTRv2`).

    Raises `TaptrError` (one line) for a name or path that is none of these.
    """
    from taptr.export.manifest import is_onnx_export

    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    if is_registered(name_or_path):
        return create_model(name_or_path)
    if is_onnx_export(name_or_path):
        from taptr.export.onnx_runtime import OnnxTAPTRv2

        return OnnxTAPTRv2(name_or_path)
    path = Path(name_or_path)
    if path.is_dir():
        _refuse_folder(path)
    if path.suffix.lower() in (".pth", ".pt"):
        if not path.is_file():
            raise TaptrError(f"no such checkpoint: {str(name_or_path)!r}")
        from taptr.official import load_official

        return load_official(path)
    from taptr.weights import load_weights  # raises for a path that is no file

    return load_weights(path)


def _refuse_folder(folder: Path) -> None:
    """Raise `TaptrError` saying what a folder given as weights is (weights are a file; the
    only folder accepted is an ONNX export, which `load_model` checked first)."""
    from taptr.export.manifest import MANIFEST

    if not any(folder.iterdir()):
        raise TaptrError(f"{str(folder)!r} is an empty folder, not weights (a .safetensors or "
                         ".pth file) nor an ONNX export (a folder from `taptr export`)")
    raise TaptrError(f"{str(folder)!r} is a folder without {MANIFEST}: not an ONNX export from "
                     "`taptr export`, and weights are a .safetensors or .pth file")
