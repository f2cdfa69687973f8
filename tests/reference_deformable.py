"""A slow, obviously correct multi-scale deformable attention, for tests only.

Loops over every (batch, query, head, level, point) and interpolates bilinearly by hand from
the four neighbouring pixels, with zero outside the map, at pixel (u * W - 0.5, v * H - 0.5).
"""

from __future__ import annotations

import math

import torch


def bilinear(level: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """level [d, H, W]; (x, y) pixel coordinates, centres at integers -> [d]."""
    _, height, width = level.shape
    x0, y0 = math.floor(x), math.floor(y)
    result = torch.zeros(level.shape[0], dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
            if 0 <= xi < width and 0 <= yi < height:
                result += weight * level[:, yi, xi].double()
    return result


def split_levels(tokens: torch.Tensor, shapes) -> list[torch.Tensor]:
    """tokens [S, d] -> list of [d, H_l, W_l]."""
    maps, start = [], 0
    for height, width in shapes:
        maps.append(tokens[start:start + height * width].T.reshape(-1, height, width))
        start += height * width
    return maps


def reference_samples(values, shapes, locations):
    """values [Nb, S, M, d]; locations [Nb, Q, M, L, P, 2] -> [Nb, Q, M, L, P, d] (float64)."""
    batch, queries, heads, levels, points, _ = locations.shape
    out = torch.zeros(batch, queries, heads, levels, points, values.shape[-1], dtype=torch.float64)
    for b in range(batch):
        for m in range(heads):
            maps = split_levels(values[b, :, m], shapes)
            for q in range(queries):
                for l, (height, width) in enumerate(shapes):
                    for p in range(points):
                        u, v = locations[b, q, m, l, p].tolist()
                        out[b, q, m, l, p] = bilinear(maps[l], u * width - 0.5, v * height - 0.5)
    return out


def reference_deformable_attention(values, shapes, locations, weights):
    """Standard deformable attention: weights [Nb, Q, M, L, P] -> [Nb, Q, M*d]."""
    samples = reference_samples(values, shapes, locations)
    out = (samples * weights.double()[..., None]).sum((3, 4))
    return out.flatten(2)


def reference_key_aware_attention(queries, keys, values, shapes, locations):
    """queries [Nb, Q, M, d] -> (out [Nb, Q, M*d], logits [Nb, Q, M*L*P])."""
    sampled_keys = reference_samples(keys, shapes, locations)
    sampled_values = reference_samples(values, shapes, locations)
    batch, num_queries, heads, levels, points, dim = sampled_keys.shape
    logits = (queries.double()[:, :, :, None, None, :] * sampled_keys).sum(-1) / math.sqrt(dim)
    logits = logits.reshape(batch, num_queries, heads, levels * points)
    attention = logits.softmax(-1).view(batch, num_queries, heads, levels, points)
    out = (sampled_values * attention[..., None]).sum((3, 4))
    return out.flatten(2), logits.flatten(2)
