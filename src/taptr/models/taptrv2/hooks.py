"""How additions attach to the TAPTRv2 network and its window loop (the hook interface).

The paper's network (this package) calls these methods at fixed points and knows nothing else
about what is attached; with no hooks it is the paper's model. An addition is a
`TrackingHook`: an `nn.Module` registered in `TAPTRv2.hooks` under its `name` (its parameters,
if any, are part of the network's state dict, under `hooks.<name>.`), which

* computes per-frame features from the raw frames and backbone stages (`frame_features`),
  kept by the stream with the frame's memory (beside the caller's gray source frames, when it
  pushes any: `TrackStream.push(frames, sources)`, `extras[frame]["source"]`);
* refines every decoder layer's positions and visibility (`after_layer`), inside the window's
  learned computation (so it is traced into the exported window graph);
* opens one `HookSession` per stream (`start(options)`, None when the options turn it off),
  which holds the addition's per-stream state and is called by `TrackStream`:

  | when                               | session method                                   |
  |------------------------------------|--------------------------------------------------|
  | points are added                   | `add_points(count)`                              |
  | a point's query frame is encoded   | `on_query_frame(features, points, starting)`     |
  | before a window is decoded         | `before_window(window)` (may set the reference   |
  |                                    | positions of the window's states, e.g. a prior)  |
  | the window's decoder inputs        | `layer_inputs(window)` -> tensors for after_layer|
  | after a window is decoded          | `after_window(window, states)` -> states         |
  | frames before `keep_from` are freed| `release(keep_from)`                             |

Every method of both classes is a no-op by default, so a hook implements only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from taptr.models.taptrv2.windows import FrameState, WindowBatch


class HookSession:
    """One hook's state in one stream (no-op callbacks; `TrackStream` calls them)."""

    def __init__(self, name: str):
        self.name = name

    def add_points(self, count: int) -> None:
        """`count` points were appended after the existing ones (extend per-point state)."""

    def on_query_frame(self, features: list[torch.Tensor] | None, points: torch.Tensor,
                       starting: torch.Tensor) -> None:
        """The query frame of the points `starting` [B, N] bool was encoded: features are this
        hook's `frame_features` of that frame (per tensor [B, ...]); points [B, N, 2] model
        coordinates (all points; use `starting` to pick)."""

    def before_window(self, window: "WindowBatch") -> None:
        """Called before the window is decoded; may replace `window.states` (e.g. the
        reference positions of frames no window has decoded yet)."""

    def layer_inputs(self, window: "WindowBatch") -> list[torch.Tensor] | None:
        """Tensors the hook's `after_layer` needs for this window (None: no layer hook)."""
        return None

    def after_window(self, window: "WindowBatch",
                     states: list["FrameState"]) -> list["FrameState"]:
        """The window's decoded states (oldest first) before they are stored and carried to
        the next window; returns them, changed or not."""
        return states

    def release(self, keep_from: int) -> None:
        """Frames before `keep_from` were freed by the stream."""


class TrackingHook(nn.Module):
    """An addition to the network (no-op defaults). Subclasses set `name`."""

    name = "hook"
    # Old state-dict key prefixes of this hook's parameters -> the current ones (files written
    # before the hook interface keep loading: `TAPTRv2.upgrade_state_dict`).
    legacy_prefixes: dict[str, str] = {}

    def frame_features(self, frames: torch.Tensor,
                       stages: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """Per-frame features from frames [Nb, 3, H, W] (normalised network input) and the
        backbone's four stages [Nb, C_s, h_s, w_s]: tensors [Nb, ...], or None."""
        return None

    def after_layer(self, position_logits: torch.Tensor, vis_logits: torch.Tensor,
                    updated: torch.Tensor, inputs: list[torch.Tensor],
                    point_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """After each decoder layer's heads: position_logits [B, W, N, 4], vis_logits
        [B, W, N, K], updated [B, W, N] bool (frames after each point's query frame), inputs
        from the session's `layer_inputs`. Returns the new (position_logits, vis_logits)."""
        return position_logits, vis_logits

    def start(self, options) -> HookSession | None:
        """A session for one stream under tracking `options` (a
        `taptr.models.options.TrackingOptions`, or None for the hook's defaults); None when
        the options turn the hook off."""
        return None

    def forward(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} is called through its hook methods")
