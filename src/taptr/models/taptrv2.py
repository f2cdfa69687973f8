"""The TAPTRv2 network: backbone, multi-scale encoder, point decoder and sliding windows.

One clear path: `encode_frames` turns frames into per-frame memory, `query_features` samples a
point's initial content at its query frame, `decoder` refines a window, and `TrackStream`
(windows.py) drives the windows. `forward` runs a whole video through a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from taptr.config import ModelConfig
from taptr.models.backbone import build_backbone
from taptr.models.correlation import PATCH_MIN_NORM, LocalCorrelation
from taptr.models.common import inverse_sigmoid
from taptr.models.decoder import PointDecoder, WindowInputs
from taptr.models.deformable_attention import LevelLayout
from taptr.models.encoder import Encoder
from taptr.models.position_encoding import map_sine_encoding
from taptr.models.windows import FrameState, TrackStream, WindowBatch

# A point counts as visible where sigmoid(visibility logit) exceeds this (the official value;
# `taptr.model_io` reports visibility with it, the template refresh gates on it).
VISIBLE_THRESHOLD = 0.5
# Elements of a temporary tensor (32-bit) the model allows itself before chunking queries.
CHUNK_BUDGET = 1 << 25


@dataclass
class FrameFeatures:
    """What the decoder reads of a batch of frames.

    memory: [Nb, S, C] encoder output; layout: its levels; correlation_maps: per correlation
    level [Nb, C_l, h_l, w_l] unit-norm maps, coarse to fine (None without the correlation
    update).
    """

    memory: torch.Tensor
    layout: LevelLayout
    correlation_maps: list[torch.Tensor] | None = None


@dataclass
class TrackOutput:
    """Tracks of a batch of videos.

    positions: [B, T, N, 2] model coordinates (u, v); vis_logits: [B, T, N, K] (visible
    probability sigmoid(vis_logits[..., 1])); boxes: [B, T, N, 4] (u, v, w, h).
    With `return_layers`: layer_positions, layer_apu_positions [L, B, T, N, 2],
    layer_vis_logits [L, B, T, N, K].
    """

    positions: torch.Tensor
    vis_logits: torch.Tensor
    boxes: torch.Tensor
    layer_positions: torch.Tensor | None = None
    layer_apu_positions: torch.Tensor | None = None
    layer_vis_logits: torch.Tensor | None = None

    @property
    def visibility(self) -> torch.Tensor:
        """[B, T, N] probability that the point is visible."""
        return torch.sigmoid(self.vis_logits[..., 1])


@dataclass
class WindowLayers:
    """What the layers of one window give, for every point and frame of it.

    position_logits, apu_logits: [Ld, B, W, N, 4] each decoder layer's position and APU
    position (logit space); vis_logits: [Ld, B, W, N, K]; carried: [B, W, N, C] the window
    update of the content (added where a point is updated).
    """

    position_logits: torch.Tensor
    apu_logits: torch.Tensor
    vis_logits: torch.Tensor
    carried: torch.Tensor


class WindowArithmetic:
    """The window loop's arithmetic (official), shared by `TAPTRv2` and the exported backend
    (`taptr.export.onnx_backend.OnnxTAPTRv2`), which differ only in how they compute the
    per-frame features and the window's layers.

    A subclass provides `config`, `training`, `device`, `dtype`, `encode`, `query_features`,
    `correlation_templates` and `decode_window_layers`; `TrackStream` drives the rest.
    """

    def decode_window(self, window: WindowBatch,
                      point_chunk: int | None = None) -> list[FrameState] | None:
        """Decode one window and carry its content over (the official window loop).

        The window's frames are stacked, `decode_window_layers` runs every decoder layer over
        them, each frame's state is replaced where a point is updated (frames after its query
        frame), and the content of updated points gets the window update. Returns the window's
        new `FrameState`s (oldest first), or None when no point is updated in it (nothing
        changes).
        """
        frame_ids = window.frame_ids
        query_frames = window.query_frames[:, None, :]
        tracked = frame_ids[None, :, None] >= query_frames  # [B, W, N]
        updated = frame_ids[None, :, None] > query_frames
        if not bool(updated.any()):
            return None
        states = window.states
        content = torch.stack([s.content for s in states], 1)  # [B, W, N, C]
        reference = torch.sigmoid(torch.stack([s.position_logits[-1] for s in states], 1))
        memory = torch.stack(window.memory, 1).flatten(0, 1)
        inputs = WindowInputs(content, reference, memory, tracked, updated, window.layout)
        if window.correlation_maps:
            inputs.correlation_maps = [
                torch.stack([maps[level] for maps in window.correlation_maps], 1).flatten(0, 1)
                for level in range(len(window.templates))]
            inputs.templates = window.templates
        layers = self.decode_window_layers(inputs, window.initial_content, point_chunk)
        write = updated[None, ..., None]  # [1, B, W, N, 1]
        old_positions = torch.stack([s.position_logits for s in states], 2)
        old_apu = torch.stack([s.apu_logits for s in states], 2)
        old_vis = torch.stack([s.vis_logits for s in states], 2)
        positions = torch.where(write, layers.position_logits, old_positions)
        apu = torch.where(write, layers.apu_logits, old_apu)
        vis = torch.where(write, layers.vis_logits, old_vis)
        carried = layers.carried
        content = content + torch.where(updated[..., None], carried, torch.zeros_like(carried))
        return [FrameState(positions[:, :, offset], apu[:, :, offset], vis[:, :, offset],
                           content[:, offset]) for offset in range(len(states))]

    def refresh_templates(self, templates: list[torch.Tensor], initial: list[torch.Tensor],
                          maps: list[torch.Tensor], tail: FrameState,
                          updated: torch.Tensor) -> list[torch.Tensor]:
        """Correlation templates after a window (ours, `config.correlation_template_update`
        = w > 0): where a point is updated and visible in the window's last frame, its
        templates become normalise((1 - w) initial + w recent), the recent ones read at its
        final position in that frame (`maps`: the frame's correlation maps); elsewhere they
        stay. templates, initial: per level [B, N, C_l]; updated: [B, N] bool.
        (Refreshing only points whose current patch still resembles the query's, NCC above 0.5
        or 0.7, did not help on the validation sets or on real video: docs/correlation.md.)
        """
        weight = self.config.correlation_template_update
        positions = torch.sigmoid(tail.position_logits[-1][..., :2])
        visible = torch.sigmoid(tail.vis_logits[-1][..., 1]) > VISIBLE_THRESHOLD
        refresh = (visible & updated)[..., None]
        recent = self.correlation_templates(maps, positions)
        return [torch.where(refresh, F.normalize((1 - weight) * first + weight * new, dim=-1,
                                                 eps=PATCH_MIN_NORM), old)
                for old, first, new in zip(templates, initial, recent)]

    @staticmethod
    def propagate(tail: FrameState, later: FrameState, with_content: bool = True) -> FrameState:
        """The state of a frame after the window that ended before it (official): the window's
        last frame's positions and visibility, and its content when `with_content` (the
        official long-video evaluation keeps the old content in some windows)."""
        return FrameState(tail.position_logits, tail.apu_logits, tail.vis_logits,
                          tail.content if with_content else later.content)

    def stream(self, query_points: torch.Tensor, query_frames: torch.Tensor,
               num_frames: int | None = None, point_chunk: int | None = None) -> TrackStream:
        """A `TrackStream` for queries [B, N, 2] (model coordinates) and frames [B, N]."""
        if point_chunk is None:
            config = self.config
            per_point = (config.window_size * config.hidden_dim * 2 * config.num_levels
                         * config.decoder_points)
            point_chunk = max(64, CHUNK_BUDGET // max(1, query_points.shape[0] * per_point))
        return TrackStream(self, query_points, query_frames, num_frames, point_chunk)


def _input_projection(in_channels: int, dim: int, kernel: int = 1, stride: int = 1):
    return nn.Sequential(nn.Conv2d(in_channels, dim, kernel, stride, kernel // 2),
                         nn.GroupNorm(32 if dim % 32 == 0 else 8, dim))


class TAPTRv2(WindowArithmetic, nn.Module):
    """TAPTRv2 (Li et al., NeurIPS 2024) as specified in the official code."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_dim
        self.backbone = build_backbone(config.backbone)
        stage_channels = [self.backbone.stage_channels[s] for s in config.backbone_stages]
        projections = [_input_projection(c, dim) for c in stage_channels]
        extra_in = stage_channels[-1]
        for _ in range(config.num_levels - len(stage_channels)):
            projections.append(_input_projection(extra_in, dim, kernel=3, stride=2))
            extra_in = dim
        self.input_proj = nn.ModuleList(projections)
        self.level_embed = nn.Parameter(torch.randn(config.num_levels, dim))
        self.encoder = Encoder(config.encoder_layers, dim, config.ffn_dim, config.num_heads,
                               config.num_levels, config.encoder_points)
        self.query_initializer = nn.Linear(config.num_levels * dim, dim)
        self.decoder = PointDecoder(config.decoder_layers, dim, config.ffn_dim, config.num_heads,
                                    config.num_levels, config.decoder_points,
                                    config.decoder_module_order, config.num_vis_logits,
                                    config.official_compat, config.point_pe_temperature,
                                    self._build_correlation(config, self.backbone.stage_channels))
        self.window_updater = nn.Sequential(nn.Linear(3 * dim, dim), nn.ReLU(),
                                            nn.Linear(dim, dim))
        # Inference option (set by `optimized_for_inference`): backbone input in channels-last
        # memory format, faster convolutions on CPU.
        self.channels_last_backbone = False
        for projection in self.input_proj:
            nn.init.xavier_uniform_(projection[0].weight)
            nn.init.zeros_(projection[0].bias)

    @staticmethod
    def _build_correlation(config: ModelConfig, stage_channels) -> LocalCorrelation | None:
        if not config.correlation_stages:
            return None
        return LocalCorrelation([stage_channels[s] for s in config.correlation_stages],
                                config.correlation_radius, pixel_patch=config.correlation_patch,
                                pixel_radius=config.correlation_pixel_radius)

    # ------------------------------------------------------------------ per-frame features
    def encode_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, LevelLayout]:
        """frames [Nb, 3, H, W] normalised -> (memory [Nb, S, C], level layout)."""
        features = self.encode(frames)
        return features.memory, features.layout

    def encode(self, frames: torch.Tensor) -> FrameFeatures:
        """frames [Nb, 3, H, W] normalised -> `FrameFeatures` (memory and correlation maps)."""
        if self.channels_last_backbone:
            frames = frames.contiguous(memory_format=torch.channels_last)
        stages = [stage.contiguous() for stage in self.backbone(frames)]
        correlation = self.decoder.correlation
        correlation_maps = (correlation.maps([stages[s] for s in self.config.correlation_stages],
                                             frames)
                            if correlation is not None else None)
        maps = [self.input_proj[i](stages[s]) for i, s in enumerate(self.config.backbone_stages)]
        for projection in self.input_proj[len(maps):]:
            source = stages[-1] if len(maps) == len(self.config.backbone_stages) else maps[-1]
            maps.append(projection(source))
        layout = LevelLayout.from_shapes([m.shape[-2:] for m in maps])
        tokens, token_pos = [], []
        for level, feature_map in enumerate(maps):
            height, width = feature_map.shape[-2:]
            tokens.append(feature_map.flatten(2).transpose(1, 2))
            encoding = map_sine_encoding(height, width, self.config.hidden_dim // 2,
                                         self.config.map_pe_temperature, frames.device,
                                         feature_map.dtype)
            token_pos.append((encoding.flatten(1).transpose(0, 1)
                              + self.level_embed[level])[None])
        tokens = torch.cat(tokens, 1)
        token_pos = torch.cat(token_pos, 1)
        samples = self.config.num_heads * self.config.encoder_points * self.config.num_levels
        chunk = max(64, CHUNK_BUDGET // max(1, frames.shape[0] * samples * self.config.head_dim))
        return FrameFeatures(self.encoder(tokens, token_pos, layout, chunk), layout,
                             correlation_maps)

    def query_features(self, memory: torch.Tensor, layout: LevelLayout,
                       points: torch.Tensor) -> torch.Tensor:
        """Initial content of points from one frame's memory.

        memory: [B, S, C]; points: [B, N, 2] (u, v) -> [B, N, C]. Every level is sampled
        bilinearly with align_corners=True and border padding, then `query_initializer`.
        """
        batch, num_points, _ = points.shape
        samples = []
        for (height, width), start in zip(layout.shapes, layout.level_starts):
            level = memory[:, start:start + height * width].transpose(1, 2)
            level = level.reshape(batch, -1, height, width)
            grid = points
            if self.config.official_compat:  # official H/W swap (docs/architecture.md, 9.2)
                scale = points.new_tensor([(height - 1) / max(width - 1, 1),
                                           (width - 1) / max(height - 1, 1)])
                grid = points * scale
            grid = (2 * grid - 1)[:, :, None, :]
            sampled = F.grid_sample(level, grid, mode="bilinear", padding_mode="border",
                                    align_corners=True)
            samples.append(sampled[..., 0].transpose(1, 2))
        return self.query_initializer(torch.cat(samples, -1))

    # ------------------------------------------------------------------ one window
    def decode_window_layers(self, inputs: WindowInputs, initial_content: torch.Tensor,
                             point_chunk: int | None = None) -> WindowLayers:
        """The learned part of a window: every decoder layer (`PointDecoder`) and the window
        update `window_updater` over (initial content, window content, last layer's fused
        feature), with dropout `config.window_update_dropout` in training.

        inputs: the window (`WindowInputs`, content [B, W, N, C]); initial_content [B, N, C].
        Returns `WindowLayers` for every point and frame (`decode_window` keeps what applies).
        """
        layers = self.decoder(inputs, point_chunk)
        carried = self.window_updater(torch.cat(
            (initial_content[:, None].expand_as(inputs.content), inputs.content,
             layers[-1].fused), -1))
        carried = F.dropout(carried, p=self.config.window_update_dropout, training=self.training)
        return WindowLayers(torch.stack([o.position_logits for o in layers]),
                            torch.stack([inverse_sigmoid(o.apu_positions) for o in layers]),
                            torch.stack([o.vis_logits for o in layers]), carried)

    def correlation_templates(self, maps: list[torch.Tensor],
                              points: torch.Tensor) -> list[torch.Tensor]:
        """Correlation templates (ours) of points [B, N, 2] from one frame's correlation maps:
        per level [B, N, C_l] (`LocalCorrelation.templates`)."""
        return self.decoder.correlation.templates(maps, points)

    @property
    def device(self) -> torch.device:
        """Where the parameters are."""
        return self.level_embed.device

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype (the stream keeps its states in it)."""
        return self.level_embed.dtype

    # ------------------------------------------------------------------ tracking
    def forward(self, video: torch.Tensor, query_points: torch.Tensor,
                query_frames: torch.Tensor, return_layers: bool = False,
                point_chunk: int | None = None) -> TrackOutput:
        """Track points through a batch of videos.

        video: [B, T, 3, H, W] normalised; query_points: [B, N, 2] (u, v); query_frames [B, N].
        """
        stream = self.stream(query_points, query_frames, video.shape[1], point_chunk)
        chunks = list(stream.run(video.split(self.config.window_stride, dim=1)))
        position_logits = torch.cat([c.layer_position_logits for c in chunks], 2)
        vis_logits = torch.cat([c.layer_vis_logits for c in chunks], 2)
        boxes = torch.sigmoid(position_logits[-1])
        output = TrackOutput(boxes[..., :2], vis_logits[-1], boxes)
        if return_layers:
            output.layer_positions = torch.sigmoid(position_logits)[..., :2]
            apu_logits = torch.cat([c.layer_apu_logits for c in chunks], 2)
            output.layer_apu_positions = torch.sigmoid(apu_logits)[..., :2]
            output.layer_vis_logits = vis_logits
        return output


def build_model(config: ModelConfig | str) -> TAPTRv2:
    """A randomly initialised TAPTRv2 for a config or preset name.

    Presets with `initialisation="tracking"` get `init_for_tracking` (ours) on top of the
    official initialisation.
    """
    if isinstance(config, str):
        from taptr.config import get_preset

        config = get_preset(config)
    model = TAPTRv2(config)
    if config.initialisation == "tracking":
        from taptr.models.init_tracking import init_for_tracking

        init_for_tracking(model)
    return model
