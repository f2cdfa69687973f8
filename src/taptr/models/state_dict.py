"""Strict state-dict loading, the one place weights enter a module (our files, official
checkpoints, training checkpoints, the EMA): every missing, unexpected or wrongly shaped entry
is named in one `TaptrError` instead of PyTorch's multi-line RuntimeError."""

from __future__ import annotations

import torch

from taptr.errors import TaptrError


def name_list(names: list[str], limit: int = 8) -> str:
    """'a, b, c (and 5 more)': the first `limit` names for an error message."""
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor],
                      describe=lambda name: name) -> None:
    """Load `state` into `model`, raising a TaptrError that names missing, unexpected and
    wrongly shaped keys (`describe` maps our names to the names the user knows). Keys of
    older files are renamed first where the model knows them (`upgrade_state_dict`)."""
    if hasattr(model, "upgrade_state_dict"):
        state = model.upgrade_state_dict(state)
    expected = model.state_dict()
    missing = [describe(k) for k in expected if k not in state]
    unexpected = [describe(k) for k in state if k not in expected]
    wrong_shape = [f"{describe(k)} {tuple(state[k].shape)} != {tuple(v.shape)}"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {name_list(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {name_list(wrong_shape)}")
    if problems:
        raise TaptrError("; ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
