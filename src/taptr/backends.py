"""Where a model runs: PyTorch (the network itself, CPU or GPU, any precision) or ONNX Runtime
(its exported graphs, CPU, fp32; `taptr.export`).

`resolve_backend` picks the backend for what the user named, `as_backend` turns a PyTorch
network into the model of a backend. A network given to the ONNX Runtime backend is exported
once into a cache folder keyed by a hash of its weights, so later runs load the graphs
directly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import torch

from taptr.errors import TaptrError

logger = logging.getLogger(__name__)

BACKENDS = ("pytorch", "onnxruntime")


def resolve_backend(backend: str | None, weights=None) -> str:
    """The backend to use: `backend` when given (checked), else 'onnxruntime' for a folder
    written by `taptr export` and 'pytorch' for everything else. Raises `TaptrError` for an
    unknown backend or an ONNX export asked to run in PyTorch."""
    from taptr.export.manifest import is_onnx_export

    exported = is_onnx_export(weights) if isinstance(weights, (str, os.PathLike)) else False
    if backend is None:
        return "onnxruntime" if exported else "pytorch"
    if backend not in BACKENDS:
        raise TaptrError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if exported and backend == "pytorch":
        raise TaptrError(f"{str(weights)!r} is an ONNX export: it runs with the onnxruntime "
                         "backend only (or give the .safetensors weights it came from)")
    return backend


def cache_folder() -> Path:
    """taptr's cache: $TAPTR_CACHE, else $XDG_CACHE_HOME/taptr, else ~/.cache/taptr."""
    if os.environ.get("TAPTR_CACHE"):
        return Path(os.environ["TAPTR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "taptr"


def weights_digest(model: torch.nn.Module) -> str:
    """A hex digest of a network's config and every tensor of its state dict."""
    digest = hashlib.sha256(model.config.to_json().encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def as_backend(model, backend: str):
    """The model that runs on `backend`: a PyTorch network as it is for 'pytorch'; for
    'onnxruntime', an already exported `OnnxTAPTRv2` as it is, or the network exported into
    the cache (reused when the same weights were exported before)."""
    from taptr.export.onnx_runtime import OnnxTAPTRv2

    if backend == "pytorch":
        if isinstance(model, OnnxTAPTRv2):
            raise TaptrError("an ONNX export runs with the onnxruntime backend only")
        return model
    if isinstance(model, OnnxTAPTRv2):
        return model
    from taptr.export.manifest import FORMAT_VERSION, is_onnx_export
    from taptr.export.onnx_export import export_onnx

    folder = (cache_folder() / "onnx"
              / f"{model.config.name}-{weights_digest(model)[:16]}-v{FORMAT_VERSION}")
    if not is_onnx_export(folder):
        logger.info("exporting the model to ONNX (once for these weights) into %s", folder)
        # Export next to the cache entry, then rename the whole folder: a reader never sees
        # a partial export, and of two processes exporting at once the first rename wins.
        staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        export_onnx(model, staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not is_onnx_export(folder):
                raise
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("exported the model to ONNX: %s", folder)
    from taptr.loading import load_model

    return load_model(folder)
