"""Reading PyTorch files (`.pth`, `.pt`) safely: the one place taptr calls `torch.load`.

Only tensors and plain containers are unpickled (`torch.load(weights_only=True)`, plus the
classes a caller allows); a file holding other Python objects is refused with a one-line
`TaptrError` that says what the file is not. PyTorch's own message for such a file suggests
turning the safety off; taptr never passes that on.
"""

from __future__ import annotations

import os
import pickle
import warnings

from taptr.errors import TaptrError


def load_tensors(source, expected: str, origin: str | None = None, allowed=()):
    """`torch.load(source, map_location="cpu", weights_only=True)`, with errors in one line.

    source: a path or a binary file object. expected: what the file should be, for the
    message (e.g. "an official TAPTRv2 checkpoint"). origin: how to name the file (default:
    the path). allowed: classes allowed besides tensors (e.g. `argparse.Namespace`).
    Raises `TaptrError` "<origin> is not <expected>: <why>" for a file with other Python
    objects, a truncated or foreign file.
    """
    import torch

    origin = origin or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "file")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(allowed)):
            warnings.simplefilter("ignore")  # e.g. pickle protocol notes from the unpickler
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise TaptrError(f"{origin} is not {expected}: it holds Python objects other than "
                         "tensors, which taptr does not load") from None
    except Exception:  # noqa: BLE001 - torch raises several types for corrupt or foreign files
        raise TaptrError(f"{origin} is not {expected}: not a readable PyTorch file (truncated, "
                         "or another format)") from None
