"""The operations of TAPTRv2 that a faster kernel may replace, written as the plain math.

`PaperOps` names them; `REFERENCE_OPS` holds the plain versions below, which every module of
the network uses unless `taptr.models.kernels` selects others by name when the model is built
or prepared (as Hugging Face's `attn_implementation`). Each replacement is tested against the
function here (tests/test_kernels.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from taptr.models.taptrv2.common import concat, feed_forward
from taptr.models.taptrv2.levels import LevelLayout, pack_levels, sample_packed


def chunks(total: int, size: int | None):
    """Slices of at most `size` (None or 0: one slice) covering range(total)."""
    size = total if not size else size
    for start in range(0, total, max(size, 1)):
        yield slice(start, min(start + size, total))


def deformable_attention(values: torch.Tensor, layout: LevelLayout, locations: torch.Tensor,
                         weights: torch.Tensor, query_chunk: int | None = None) -> torch.Tensor:
    """Multi-scale deformable attention core (Deformable-DETR `MSDeformAttn`, section 4.1 of
    its paper; official `ms_deform_attn_core_pytorch`): every sample is a bilinear read of its
    level (4-D `grid_sample` on the packed canvas), weighted and summed.

    values: [Nb, S, M, d]; locations: [Nb, Q, M, L, P, 2] normalised (u, v);
    weights: [Nb, Q, M, L, P] (already normalised). returns [Nb, Q, M*d].
    """
    batch, _, num_heads, head_dim = values.shape
    canvas = pack_levels(values.flatten(2), layout, num_heads)
    outputs = []
    for chunk in chunks(locations.shape[1], query_chunk):
        samples = sample_packed(canvas, layout, locations[:, chunk])  # [Nb*M, d, q, LP]
        chunk_weights = weights[:, chunk].permute(0, 2, 1, 3, 4).flatten(3)
        chunk_weights = chunk_weights.reshape(batch * num_heads, 1, -1, samples.shape[-1])
        out = (samples * chunk_weights).sum(-1)  # [Nb*M, d, q]
        outputs.append(out.view(batch, num_heads * head_dim, -1).transpose(1, 2))
    return concat(outputs, 1)


def key_aware_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        layout: LevelLayout, locations: torch.Tensor,
                        query_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Key-aware deformable attention core (TAPTRv2, paper section 3.3; official
    `MSDeformAttn_KeyAware`): keys and values are read at the same samples, and per head the
    logits <q_m, k_(m,l,p)> / sqrt(d) are soft-maxed over the L*P samples.

    queries: [Nb, Q, M, d]; keys, values: [Nb, S, M, d]; locations: [Nb, Q, M, L, P, 2].
    returns (output [Nb, Q, M*d], raw logits [Nb, Q, M*L*P] head-major, then level, point).
    """
    batch, _, num_heads, head_dim = values.shape
    packed = torch.cat((keys, values), dim=-1).flatten(2)  # [Nb, S, M*2d]
    canvas = pack_levels(packed, layout, num_heads)
    outputs, all_logits = [], []
    for chunk in chunks(locations.shape[1], query_chunk):
        samples = sample_packed(canvas, layout, locations[:, chunk])  # [Nb*M, 2d, q, LP]
        sampled_keys, sampled_values = samples[:, :head_dim], samples[:, head_dim:]
        chunk_queries = queries[:, chunk].permute(0, 2, 3, 1).reshape(batch * num_heads,
                                                                      head_dim, -1, 1)
        logits = (chunk_queries * sampled_keys).sum(1) / math.sqrt(head_dim)  # [Nb*M, q, LP]
        attention = logits.softmax(-1)
        out = (sampled_values * attention[:, None]).sum(-1)  # [Nb*M, d, q]
        outputs.append(out.view(batch, num_heads * head_dim, -1).transpose(1, 2))
        all_logits.append(logits.view(batch, num_heads, logits.shape[1], -1)
                          .permute(0, 2, 1, 3).flatten(2))
    return concat(outputs, 1), concat(all_logits, 1)


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis."""
    return logits.softmax(-1)


def same_group_mask(flags: torch.Tensor) -> torch.Tensor | None:
    """Attention mask of TAPTRv2's decoder self-attentions (official code): flags [Nb, L] bool
    -> allowed [Nb, L, L], True where two elements have the same flag (tracked attends to
    tracked, untracked to untracked)."""
    return flags[:, :, None] == flags[:, None, :]


@dataclass(frozen=True)
class PaperOps:
    """The replaceable operations of the network, with the signatures of the functions above.

    deformable_attention, key_aware_attention: the attention cores; softmax: over the last
    axis; feed_forward(x, linear1, linear2, norm): the post-norm FFN; attention_mask(flags):
    the decoder self-attentions' mask (None = every pair may attend).
    """

    name: str
    deformable_attention: Callable
    key_aware_attention: Callable
    softmax: Callable
    feed_forward: Callable
    attention_mask: Callable


REFERENCE_OPS = PaperOps("reference", deformable_attention, key_aware_attention, softmax,
                         feed_forward, same_group_mask)
