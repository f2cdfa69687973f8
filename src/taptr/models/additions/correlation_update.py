"""The local correlation update (ours) as a hook of the TAPTRv2 window loop, with its template
refresh (docs/correlation.md).

`CorrelationUpdate` is the `LocalCorrelation` module attached to the network: per frame it
computes the correlation maps (`frame_features`), after every decoder layer it moves points to
their template's match (`after_layer`). Its `CorrelationSession` keeps each point's templates
(read at its query position in its query frame) and, with `TrackingOptions.template_update`
w > 0, refreshes them after each window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from taptr.config import ModelConfig
from taptr.models.additions.correlation import PATCH_MIN_NORM, LocalCorrelation
from taptr.models.taptrv2.common import concat, inverse_sigmoid
from taptr.models.taptrv2.hooks import HookSession, TrackingHook
from taptr.models.taptrv2.model import VISIBLE_THRESHOLD


class CorrelationUpdate(LocalCorrelation, TrackingHook):
    """`LocalCorrelation` on the backbone stages `stages` (coarse to fine), as a hook.

    Parameters are saved under `hooks.correlation.` (files before the hook interface had them
    under `decoder.correlation.`, which still load).
    """

    name = "correlation"
    legacy_prefixes = {"decoder.correlation.": ""}

    def __init__(self, stages: tuple[int, ...], stage_channels: list[int], radius: int,
                 pixel_patch: int = 0, pixel_radius: int | None = None):
        super().__init__([stage_channels[s] for s in stages], radius, pixel_patch=pixel_patch,
                         pixel_radius=pixel_radius)
        self.stages = tuple(stages)

    @classmethod
    def from_config(cls, config: ModelConfig, stage_channels: list[int]) -> "CorrelationUpdate":
        return cls(config.correlation_stages, stage_channels, config.correlation_radius,
                   config.correlation_patch, config.correlation_pixel_radius)

    def frame_features(self, frames: torch.Tensor,
                       stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """The correlation maps of frames (`LocalCorrelation.maps`): per level [Nb, C_l, h, w]."""
        return self.maps([stages[s] for s in self.stages], frames)

    def after_layer(self, position_logits: torch.Tensor, vis_logits: torch.Tensor,
                    updated: torch.Tensor, inputs: list[torch.Tensor],
                    point_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The correlation update of one decoder layer's output on updated frames only, over
        at most `point_chunk` points at a time (the same results, bounded memory).

        inputs: per level the window's maps [B*W, C_l, h_l, w_l], then per level the
        templates [B, N, C_l] (`CorrelationSession.layer_inputs`).
        """
        levels = len(inputs) // 2
        maps, templates = inputs[:levels], inputs[levels:]
        batch, window, num_points = position_logits.shape[:3]
        positions = torch.sigmoid(position_logits[..., :2]).flatten(0, 1)  # [BW, N, 2]
        templates = [t[:, None].expand(batch, window, *t.shape[1:]).flatten(0, 1)
                     for t in templates]
        chunk = point_chunk or num_points
        moved, vis_offset = [], []
        for start in range(0, num_points, chunk):
            part = slice(start, start + chunk)
            result = self.update(positions[:, part], maps, [t[:, part] for t in templates])
            moved.append(result[0])
            vis_offset.append(result[1])
        moved = concat(moved, 1).view(batch, window, num_points, 2).to(position_logits.dtype)
        vis_offset = concat(vis_offset, 1).view(batch, window, num_points, 1).to(
            vis_logits.dtype)
        updated = updated[..., None]
        moved_logits = torch.cat((inverse_sigmoid(moved), position_logits[..., 2:]), -1)
        position_logits = torch.where(updated, moved_logits, position_logits)
        extra = torch.zeros_like(vis_logits)
        extra[..., 1:2] = vis_offset
        vis_logits = vis_logits + torch.where(updated, extra, torch.zeros_like(extra))
        return position_logits, vis_logits

    def start(self, options) -> "CorrelationSession | None":
        return correlation_session(self, options)


def correlation_session(hook, options) -> "CorrelationSession | None":
    """The session of a correlation hook (anything with `name` and `templates(maps,
    points)`) under `options`: None when `options.correlation` is off."""
    if options is not None and not options.correlation:
        return None
    return CorrelationSession(hook, 0.0 if options is None else options.template_update)


class CorrelationSession(HookSession):
    """Each point's correlation templates in one stream (per level [B, N, C_l]).

    hook: reads templates (`templates(maps, points)`); template_update: the refresh weight w
    (0: the query frame's templates only).
    """

    def __init__(self, hook, template_update: float = 0.0):
        super().__init__(hook.name)
        self.hook = hook
        self.template_update = template_update
        self.templates: list[torch.Tensor] = []
        # The query frame's templates, when templates are refreshed after each window.
        self.initial: list[torch.Tensor] | None = None

    def add_points(self, count: int) -> None:
        def padded(templates):
            return [torch.cat((t, t.new_zeros(t.shape[0], count, t.shape[-1])), 1)
                    for t in templates]

        self.templates = padded(self.templates)
        if self.initial is not None:
            self.initial = padded(self.initial)

    def on_query_frame(self, features, points, starting) -> None:
        if features is None:
            return
        read = self.hook.templates(features, points)
        mask = starting[..., None]
        known = self.templates or [torch.zeros_like(t) for t in read]
        self.templates = [torch.where(mask, new, old) for new, old in zip(read, known)]
        if self.template_update > 0:
            known = self.initial or [torch.zeros_like(t) for t in read]
            self.initial = [torch.where(mask, new, old) for new, old in zip(read, known)]

    def layer_inputs(self, window) -> list[torch.Tensor] | None:
        if not window.extras or self.name not in window.extras[0]:
            return None
        maps = [torch.stack([extras[self.name][level] for extras in window.extras], 1)
                .flatten(0, 1) for level in range(len(self.templates))]
        return maps + self.templates

    def after_window(self, window, states):
        """The template refresh (w > 0): where a point is updated and visible in the window's
        last frame, its templates become normalise((1 - w) initial + w recent), the recent
        ones read at its final position in that frame; elsewhere they stay.
        (Refreshing only points whose current patch still resembles the query's, NCC above 0.5
        or 0.7, did not help on the validation sets or on real video: docs/correlation.md.)
        """
        maps = window.extras[-1].get(self.name)
        if self.initial is None or maps is None:
            return states
        last_frame = int(window.frame_ids[-1])
        self.templates = refreshed_templates(self.hook, self.templates, self.initial, maps,
                                             states[-1], window.query_frames < last_frame,
                                             self.template_update)
        return states


def refreshed_templates(hook, templates: list[torch.Tensor], initial: list[torch.Tensor],
                        maps: list[torch.Tensor], tail, updated: torch.Tensor,
                        weight: float) -> list[torch.Tensor]:
    """Templates after a window (`CorrelationSession.after_window`): templates, initial: per
    level [B, N, C_l]; maps: the window's last frame's correlation maps; tail: its
    `FrameState`; updated: [B, N] bool; weight: w."""
    positions = torch.sigmoid(tail.position_logits[-1][..., :2])
    visible = torch.sigmoid(tail.vis_logits[-1][..., 1]) > VISIBLE_THRESHOLD
    refresh = (visible & updated)[..., None]
    recent = hook.templates(maps, positions)
    return [torch.where(refresh, F.normalize((1 - weight) * first + weight * new, dim=-1,
                                             eps=PATCH_MIN_NORM), old)
            for old, first, new in zip(templates, initial, recent)]
