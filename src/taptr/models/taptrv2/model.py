"""The TAPTRv2 network (Li et al., NeurIPS 2024): backbone, multi-scale encoder, point decoder
and sliding windows, as specified in the official code.

One clear path: `encode` turns frames into per-frame memory (section 3.1), `query_features`
samples a point's initial content at its query frame (section 3.2), `decoder` refines a window
(sections 3.3-3.4), and `TrackStream` (windows.py) drives the windows (section 3.5). `forward`
runs a whole video through a stream. Additions attach through `hooks` (hooks.py); fast kernels
replace `ops` (ops.py) by name; without either this is the paper's model in plain math.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from taptr.config import ModelConfig
from taptr.models.taptrv2.backbone import build_backbone
from taptr.models.taptrv2.common import inverse_sigmoid
from taptr.models.taptrv2.decoder import PointDecoder, WindowInputs
from taptr.models.taptrv2.encoder import Encoder
from taptr.models.taptrv2.hooks import TrackingHook
from taptr.models.taptrv2.levels import LevelLayout
from taptr.models.taptrv2.position_encoding import map_sine_encoding
from taptr.models.taptrv2.windows import FrameState, TrackStream, WindowBatch

# A point counts as visible where sigmoid(visibility logit) exceeds this (the official value;
# `taptr.model_io` reports visibility with it).
VISIBLE_THRESHOLD = 0.5
# Elements of a temporary tensor (32-bit) the model allows itself before chunking queries.
CHUNK_BUDGET = 1 << 25


@dataclass
class FrameFeatures:
    """What the decoder reads of a batch of frames.

    memory: [Nb, S, C] encoder output; layout: its levels; extras: per hook name, that hook's
    `frame_features` (tensors [Nb, ...]; empty without hooks).
    """

    memory: torch.Tensor
    layout: LevelLayout
    extras: dict[str, list[torch.Tensor]] = field(default_factory=dict)


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
    (`taptr.export.onnx_runtime.OnnxTAPTRv2`), which differ only in how they compute the
    per-frame features and the window's layers.

    A subclass provides `config`, `training`, `device`, `dtype`, `hooks` (name -> hook),
    `default_options`, `encode`, `query_features` and `decode_window_layers`; `TrackStream`
    drives the rest.
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
        inputs = WindowInputs(content, reference, memory, tracked, updated, window.layout,
                              window.layer_inputs)
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

    @staticmethod
    def propagate(tail: FrameState, later: FrameState, with_content: bool = True) -> FrameState:
        """The state of a frame after the window that ended before it (official): the window's
        last frame's positions and visibility, and its content when `with_content` (the
        official long-video evaluation keeps the old content in some windows)."""
        return FrameState(tail.position_logits, tail.apu_logits, tail.vis_logits,
                          tail.content if with_content else later.content)

    def stream(self, query_points: torch.Tensor, query_frames: torch.Tensor,
               num_frames: int | None = None, point_chunk: int | None = None,
               options=None) -> TrackStream:
        """A `TrackStream` for queries [B, N, 2] (model coordinates) and frames [B, N].

        options: tracking options (a `taptr.models.options.TrackingOptions`; None: the
        model's `default_options`), handed to every hook's `start`; its `point_chunk` applies
        where `point_chunk` is None and its `long_video_padding` (None: `official_compat`)
        switches the official long-video content padding.
        """
        options = self.default_options if options is None else options
        config = self.config
        if point_chunk is None and options is not None:
            point_chunk = options.point_chunk
        if point_chunk is None:
            per_point = (config.window_size * config.hidden_dim * 2 * config.num_levels
                         * config.decoder_points)
            point_chunk = max(64, CHUNK_BUDGET // max(1, query_points.shape[0] * per_point))
        padding = None if options is None else options.long_video_padding
        sessions = [session for hook in self.hooks.values()
                    if (session := hook.start(options)) is not None]
        return TrackStream(self, query_points, query_frames, num_frames, point_chunk,
                           sessions, config.official_compat if padding is None else padding)


def _input_projection(in_channels: int, dim: int, kernel: int = 1, stride: int = 1):
    return nn.Sequential(nn.Conv2d(in_channels, dim, kernel, stride, kernel // 2),
                         nn.GroupNorm(32 if dim % 32 == 0 else 8, dim))


class TAPTRv2(WindowArithmetic, nn.Module):
    """TAPTRv2 (Li et al., NeurIPS 2024) as specified in the official code.

    config: the architecture; hooks: additions (`taptrv2.hooks.TrackingHook`s, registered
    under their names in `self.hooks`; none: the paper's network). `default_options`: the
    tracking options streams use when given none (set by `taptr.models.build`; None here).
    """

    def __init__(self, config: ModelConfig, hooks: list[TrackingHook] | tuple = ()):
        super().__init__()
        self.config = config
        self.default_options = None
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
                                    config.official_compat, config.point_pe_temperature)
        self.window_updater = nn.Sequential(nn.Linear(3 * dim, dim), nn.ReLU(),
                                            nn.Linear(dim, dim))
        for projection in self.input_proj:
            nn.init.xavier_uniform_(projection[0].weight)
            nn.init.zeros_(projection[0].bias)
        self.hooks = nn.ModuleDict({hook.name: hook for hook in hooks})

    def upgrade_key(self, key: str) -> str:
        """A parameter name (or name prefix) of an older file -> the current one (each hook's
        `legacy_prefixes`, under `hooks.<name>.`); other names as they are."""
        probe = key + "."
        for name, hook in self.hooks.items():
            for old, new in hook.legacy_prefixes.items():
                if probe.startswith(old):
                    return (f"hooks.{name}.{new}" + probe[len(old):]).rstrip(".")
        return key

    def upgrade_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` with keys of older files renamed to the current ones (`upgrade_key`)."""
        return {self.upgrade_key(key): value for key, value in state.items()}

    # ------------------------------------------------------------------ per-frame features
    def encode_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, LevelLayout]:
        """frames [Nb, 3, H, W] normalised -> (memory [Nb, S, C], level layout)."""
        features = self.encode(frames)
        return features.memory, features.layout

    def encode(self, frames: torch.Tensor, hooks=None) -> FrameFeatures:
        """frames [Nb, 3, H, W] normalised -> `FrameFeatures`: the encoder memory (section
        3.1) and the `frame_features` of the hooks named in `hooks` (None: every hook)."""
        stages = [stage.contiguous() for stage in self.backbone(frames)]
        extras = {}
        for name, hook in self.hooks.items():
            if hooks is None or name in hooks:
                features = hook.frame_features(frames, stages)
                if features is not None:
                    extras[name] = features
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
        return FrameFeatures(self.encoder(tokens, token_pos, layout, chunk), layout, extras)

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
        layer_hooks = [(self.hooks[name], tensors) for name, tensors in inputs.hook_inputs.items()]
        layers = self.decoder(inputs, point_chunk, layer_hooks)
        carried = self.window_updater(torch.cat(
            (initial_content[:, None].expand_as(inputs.content), inputs.content,
             layers[-1].fused), -1))
        carried = F.dropout(carried, p=self.config.window_update_dropout, training=self.training)
        return WindowLayers(torch.stack([o.position_logits for o in layers]),
                            torch.stack([inverse_sigmoid(o.apu_positions) for o in layers]),
                            torch.stack([o.vis_logits for o in layers]), carried)

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
