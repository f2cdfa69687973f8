"""The four pieces of TAPTRv2 that ONNX export traces, as modules with tensor-only inputs.

A TrackStream asks its model for four computations (`WindowArithmetic`); each is one graph:

| graph | inputs | outputs |
|---|---|---|
| `encoder` | frames [F, 3, H_in, W_in] normalised (exported for F = 1) | memory [F, S, C], correlation maps |
| `query_features` | memory [B, S, C], points [B, N, 2] | initial content [B, N, C] |
| `templates` | one frame's correlation maps, points [B, N, 2] | templates per level [B, N, C_l] |
| `window` | a window's states, memory, maps, templates | `WindowLayers` fields |

Correlation maps and templates exist only for presets with the correlation update (ours); the
paper preset's graphs have none. The level layout of the memory is fixed by the input size, so
it is a constant of the graphs (and written in the export's manifest).
"""

from __future__ import annotations

import torch
from torch import nn

from taptr.models.taptrv2.decoder import WindowInputs
from taptr.models.taptrv2.levels import LevelLayout


class EncoderGraph(nn.Module):
    """frames [F, 3, H_in, W_in] -> (memory [F, S, C], *correlation maps [F, C_l, h_l, w_l])."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor):
        features = self.model.encode(frames)
        return (features.memory, *features.extras.get("correlation", []))


class QueryFeaturesGraph(nn.Module):
    """(memory [B, S, C], points [B, N, 2]) -> initial content [B, N, C]
    (`TAPTRv2.query_features`)."""

    def __init__(self, model, layout: LevelLayout):
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, memory: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.model.query_features(memory, self.layout, points)


class TemplatesGraph(nn.Module):
    """(points [B, N, 2], *maps of one frame [B, C_l, h_l, w_l]) -> templates per level
    [B, N, C_l] (the correlation hook's `templates`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, points: torch.Tensor, *maps: torch.Tensor):
        return tuple(self.model.hooks["correlation"].templates(list(maps), points))


class WindowGraph(nn.Module):
    """One window's layers (`TAPTRv2.decode_window_layers`).

    Inputs: content [B, W, N, C], reference [B, W, N, 4], memory [B*W, S, C], tracked and
    updated [B, W, N] bool, initial_content [B, N, C], then per correlation level the maps
    [B*W, C_l, h_l, w_l], then per level the templates [B, N, C_l].
    Outputs: position_logits, apu_logits [Ld, B, W, N, 4], vis_logits [Ld, B, W, N, K],
    carried [B, W, N, C].
    """

    def __init__(self, model, layout: LevelLayout, correlation_levels: int):
        super().__init__()
        self.model = model
        self.layout = layout
        self.correlation_levels = correlation_levels

    def forward(self, content, reference, memory, tracked, updated, initial_content,
                *correlation):
        levels = self.correlation_levels
        inputs = WindowInputs(content, reference, memory, tracked, updated, self.layout)
        if levels:  # the correlation hook's inputs: maps, then templates
            inputs.hook_inputs = {"correlation": list(correlation)}
        layers = self.model.decode_window_layers(inputs, initial_content)
        return layers.position_logits, layers.apu_logits, layers.vis_logits, layers.carried
