"""TAPTRv2 point decoder: decoder layers with key-aware cross-attention and the
Attention-based Position Update (APU), temporal and point self-attention, and the shared heads.

Layout inside a window: [B, W, N, ...] (batch, window frame, point). `tracked` (R) marks
frames at or after a point's query frame, `updated` (U) frames strictly after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from taptr.models.taptrv2.attention import MultiheadAttention
from taptr.models.taptrv2.common import MLP, inverse_sigmoid, mlp_sequential
from taptr.models.taptrv2.deformable_attention import KeyAwareDeformableAttention
from taptr.models.taptrv2.levels import LevelLayout
from taptr.models.taptrv2.ops import REFERENCE_OPS, PaperOps
from taptr.models.taptrv2.position_encoding import point_sine_embedding


@dataclass
class WindowInputs:
    """What a decoder pass over one window needs.

    content: [B, W, N, C] initial content of the window (X0);
    reference: [B, W, N, 4] sigmoid positions (u, v, w, h);
    memory: [B*W, S, C] encoder output of the window frames;
    tracked, updated: [B, W, N] bool (R and U).
    """

    content: torch.Tensor
    reference: torch.Tensor
    memory: torch.Tensor
    tracked: torch.Tensor
    updated: torch.Tensor
    layout: LevelLayout
    # Per hook name, the tensors its `after_layer` reads (`taptrv2.hooks`; empty: none).
    hook_inputs: dict[str, list[torch.Tensor]] = field(default_factory=dict)


@dataclass
class LayerOutputs:
    """Per decoder layer: fused feature Z [B,W,N,C], position logits o [B,W,N,4],
    APU position r_ca [B,W,N,4] (in [0,1]) and visibility logits c [B,W,N,K]."""

    fused: torch.Tensor
    position_logits: torch.Tensor
    apu_positions: torch.Tensor
    vis_logits: torch.Tensor


def attention_based_position_update(reference: torch.Tensor, sample_weights: torch.Tensor,
                                    offsets: torch.Tensor, layout: LevelLayout,
                                    updated: torch.Tensor, official_compat: bool = False):
    """The Attention-based Position Update (APU; the TAPTRv2 paper's central idea, official
    `caupdate_*`): each point moves to the attention-weighted mean of its cross-attention
    sampling offsets, so the position follows where the attention looked.

    reference: [B, W, N, 4] positions (u, v, w, h) in [0, 1] before the layer;
    sample_weights: [B*W, N, K] unnormalised weights of the K = M*L*P samples (the decoder
    layer's MLP over the raw key-aware attention logits), soft-maxed here over all K;
    offsets: [B*W, N, M, L, P, 2] sampling offsets in pixels of each level;
    updated: [B, W, N] bool, frames after each point's query frame (only these move).
    Returns (apu reference r_ca [B, W, N, 4], displacement [B, W, N, 2] in model coordinates).
    """
    batch, window, num_points = reference.shape[:3]
    sizes = layout.sizes(offsets)  # [L, 2] (W_l, H_l)
    # The official code divides (x, y) offsets by (H, W): only right for square maps.
    normaliser = sizes.flip(-1) if official_compat else sizes
    # Offsets in model coordinates: each sample's by its level's size. (The divisor is made a
    # contiguous [L, P, 2] block, which a CPU divides 30x faster than a broadcast [L, 1, 2].)
    per_sample = normaliser[:, None, :].expand(*offsets.shape[-3:]).contiguous()
    normalised = (offsets / per_sample).flatten(2, 4)  # [BW, N, K, 2]
    weights = sample_weights.softmax(-1)  # [BW, N, K]
    shift = (weights[..., None] * normalised).sum(-2).view(batch, window, num_points, 2)
    moved = torch.sigmoid(inverse_sigmoid(reference[..., :2] + shift))
    moving = updated[..., None]
    apu_reference = torch.where(moving, torch.cat((moved, reference[..., 2:]), -1), reference)
    displacement = torch.where(moving, moved - reference[..., :2], torch.zeros_like(moved))
    return apu_reference, displacement


class DecoderLayer(nn.Module):
    """One TAPTRv2 decoder layer; module order configurable ('ca', 'tsa', 'sa', 'ffn').

    Official parameter names: cross_attn, norm1 (ca); temp_self_attn, norm_temp (tsa);
    self_attn, norm2 (sa); linear1, linear2, norm3 (ffn); update_pos_embed_head,
    caupdate_weight_normalizer, caupdate_weight_regressor (APU).
    """

    def __init__(self, dim, ffn_dim, num_heads, num_levels, num_points, module_order,
                 official_compat=False, pe_temperature=10.0, ops: PaperOps = REFERENCE_OPS):
        super().__init__()
        num_samples = num_heads * num_levels * num_points
        self.module_order = tuple(module_order)
        self.official_compat = official_compat
        self.pe_temperature = pe_temperature
        self.ops = ops
        self.cross_attn = KeyAwareDeformableAttention(dim, num_heads, num_levels, num_points, ops)
        self.norm1 = nn.LayerNorm(dim)
        self.temp_self_attn = MultiheadAttention(dim, num_heads)
        self.norm_temp = nn.LayerNorm(dim)
        self.self_attn = MultiheadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.update_pos_embed_head = MLP(2 * dim, dim, dim, 2)
        self.caupdate_weight_normalizer = nn.Sequential(
            nn.Linear(num_samples, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.caupdate_weight_regressor = nn.Sequential(nn.Linear(dim, num_samples))

    def forward(self, content, query_pos, reference, inputs: WindowInputs, point_chunk=None):
        """content, query_pos: [B, W, N, C]; reference: [B, W, N, 4].

        returns (content, apu reference r_ca [B, W, N, 4], APU displacement [B, W, N, 2]).
        """
        apu_reference = reference
        displacement = torch.zeros_like(reference[..., :2])
        for module in self.module_order:
            if module == "ca":
                content, apu_reference, displacement = self._cross_attention(
                    content, query_pos, reference, inputs, point_chunk)
                query_pos = self.update_pos_embed_head(
                    point_sine_embedding(apu_reference, content.shape[-1] // 2,
                                         self.pe_temperature))
            elif module == "tsa":
                content = self._temporal_attention(content, query_pos, inputs.tracked)
            elif module == "sa":
                content = self._point_attention(content, query_pos, inputs.tracked, point_chunk)
            else:
                content = self.ops.feed_forward(content, self.linear1, self.linear2, self.norm3)
        return content, apu_reference, displacement

    def _cross_attention(self, content, query_pos, reference, inputs, point_chunk):
        batch, window, num_points, dim = content.shape
        flat = (batch * window, num_points)
        attended, logits, offsets = self.cross_attn(
            (content + query_pos).reshape(*flat, dim), reference[..., :2].reshape(*flat, 2),
            inputs.memory, inputs.layout, point_chunk)
        content = self.norm1(content + attended.view(batch, window, num_points, dim))
        weights = self.caupdate_weight_regressor(self.caupdate_weight_normalizer(logits))
        apu_reference, displacement = attention_based_position_update(
            reference, weights, offsets, inputs.layout, inputs.updated, self.official_compat)
        return content, apu_reference, displacement

    def _temporal_attention(self, content, query_pos, tracked):
        batch, window, num_points, dim = content.shape
        per_point = content.transpose(1, 2).reshape(batch * num_points, window, dim)
        pos = query_pos.transpose(1, 2).reshape(batch * num_points, window, dim)
        track_flags = tracked.transpose(1, 2).reshape(batch * num_points, window)
        out = self.temp_self_attn(per_point + pos, per_point, self.ops.attention_mask(track_flags))
        out = out.view(batch, num_points, window, dim).transpose(1, 2)
        return self.norm_temp(content + out)

    def _point_attention(self, content, query_pos, tracked, point_chunk):
        batch, window, num_points, dim = content.shape
        per_frame = content.reshape(batch * window, num_points, dim)
        pos = query_pos.reshape(batch * window, num_points, dim)
        track_flags = tracked.reshape(batch * window, num_points)
        out = self.self_attn(per_frame + pos, per_frame, self.ops.attention_mask(track_flags),
                             point_chunk)
        return self.norm2(content + out.view(batch, window, num_points, dim))


class PointDecoder(nn.Module):
    """The decoder stack with its shared modules and per-layer heads (paper section 3.2-3.4).

    Official names: ref_point_head, query_updater, ca_update_fuser (shared), and per layer
    bbox_embed -> `position_heads`, class_embed -> `visibility_heads`.
    """

    def __init__(self, num_layers, dim, ffn_dim, num_heads, num_levels, num_points,
                 module_order, num_vis_logits=3, official_compat=False, pe_temperature=10.0,
                 ops: PaperOps = REFERENCE_OPS):
        super().__init__()
        self.pe_temperature = pe_temperature
        self.layers = nn.ModuleList(
            DecoderLayer(dim, ffn_dim, num_heads, num_levels, num_points, module_order,
                         official_compat, pe_temperature, ops) for _ in range(num_layers))
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)
        self.query_updater = mlp_sequential(2 * dim, dim, dim, 2)
        self.ca_update_fuser = mlp_sequential(2 * dim, dim, dim, 3)
        self.position_heads = nn.ModuleList(MLP(dim, dim, 4, 3) for _ in range(num_layers))
        self.visibility_heads = nn.ModuleList(nn.Linear(dim, num_vis_logits)
                                              for _ in range(num_layers))
        for head in self.position_heads:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        for head in self.visibility_heads:
            nn.init.constant_(head.bias, -4.59511985013459)  # -log((1 - 0.01) / 0.01)

    def _embed(self, points: torch.Tensor, dim: int) -> torch.Tensor:
        return point_sine_embedding(points, dim // 2, self.pe_temperature)

    def forward(self, inputs: WindowInputs, point_chunk: int | None = None,
                layer_hooks=()) -> list[LayerOutputs]:
        """Run every layer over one window; returns one `LayerOutputs` per layer.

        layer_hooks: (hook, inputs) pairs; each hook's `after_layer` refines every layer's
        positions and visibility after its heads (`taptrv2.hooks`; none in the paper).
        """
        initial_content = inputs.content
        content = initial_content
        reference = inputs.reference
        dim = content.shape[-1]
        updated = inputs.updated[..., None]
        outputs = []
        for index, layer in enumerate(self.layers):
            query_pos = self.ref_point_head(self._embed(reference, dim))
            if index > 0:
                content = content + self.query_updater(torch.cat((content, initial_content), -1))
            content, apu_reference, displacement = layer(content, query_pos, reference, inputs,
                                                         point_chunk)
            fused = self.ca_update_fuser(torch.cat((content, self._embed(displacement, dim)), -1))
            refinement = torch.where(updated, self.position_heads[index](fused),
                                     torch.zeros((), dtype=fused.dtype, device=fused.device))
            position_logits = refinement + inverse_sigmoid(apu_reference)
            vis_logits = self.visibility_heads[index](fused)
            for hook, hook_inputs in layer_hooks:
                position_logits, vis_logits = hook.after_layer(
                    position_logits, vis_logits, inputs.updated, hook_inputs, point_chunk)
            outputs.append(LayerOutputs(fused, position_logits, apu_reference, vis_logits))
            reference = torch.sigmoid(position_logits).detach()
        return outputs
