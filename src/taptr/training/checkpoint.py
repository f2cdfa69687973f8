"""Training checkpoints: atomic save, safe load, random-generator states.

A checkpoint is a plain dict of tensors, dicts, lists, tuples, ints, floats, strings and None,
written through `taptr.io.atomic.atomic_path` (temporary file, fsync, `os.replace`: a crash
never leaves a half-written `last.pt`), and read back with `torch.load(weights_only=True)`
through `taptr.io.torch_files` (no arbitrary unpickling; one-line errors).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from taptr.errors import TaptrError
from taptr.io.atomic import atomic_path
from taptr.io.torch_files import load_tensors


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` to `path` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by `save_checkpoint` (tensors on the CPU).

    Raises `TaptrError` (one line) for a missing file, a file that is not a readable PyTorch
    file or holds Python objects other than tensors and plain containers
    (`taptr.io.torch_files.load_tensors`), and a dict without a training step.
    """
    path = Path(path)
    if not path.is_file():
        raise TaptrError(f"no checkpoint at {path}")
    state = load_tensors(path, "a taptr training checkpoint")
    if not isinstance(state, dict) or "step" not in state:
        raise TaptrError(f"{path} is not a taptr training checkpoint")
    return state


def capture_rng_state() -> dict:
    """The global Python, NumPy and torch (CPU and CUDA) generator states, loadable with
    `weights_only=True` (NumPy's key array is stored as a list of ints)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": numpy_state["state"]["key"].tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of `capture_rng_state`. CUDA states are restored when the devices exist."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state({
        "bit_generator": numpy_state["bit_generator"],
        "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32),
                  "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
