"""Small building blocks of the TAPTRv2 network (official `util/misc.py`, DETR's MLP)."""

from __future__ import annotations

import torch
from torch import nn

INVERSE_SIGMOID_EPS = 1e-3


def inverse_sigmoid(probabilities: torch.Tensor, eps: float = INVERSE_SIGMOID_EPS) -> torch.Tensor:
    """The official clamped logit: clamp to [0, 1], then log(max(p, eps) / max(1 - p, eps)).

    sigmoid(inverse_sigmoid(p)) is the identity on [eps, 1 - eps] and saturates outside.
    """
    probabilities = probabilities.clamp(min=0, max=1)
    numerator = probabilities.clamp(min=eps)
    denominator = (1 - probabilities).clamp(min=eps)
    return torch.log(numerator / denominator)


def feed_forward(inputs: torch.Tensor, linear1: nn.Linear, linear2: nn.Linear,
                 norm: nn.Module) -> torch.Tensor:
    """Post-norm transformer FFN (official `forward_ffn`): norm(x + linear2(relu(linear1(x)))),
    x [..., C] -> [..., C]. The reference kernel (`taptr.models.kernels` has a chunked one)."""
    return norm(inputs + linear2(torch.relu(linear1(inputs))))


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's MLP; parameters `layers.{i}`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            inputs = layer(inputs)
            if index < len(self.layers) - 1:
                inputs = torch.relu(inputs)
        return inputs


def mlp_sequential(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> nn.Sequential:
    """Linear, ReLU, Linear, ... as an `nn.Sequential` (official `query_updater` layout:
    Linear modules at even indices 0, 2, 4)."""
    modules: list[nn.Module] = []
    for index in range(num_layers):
        modules.append(nn.Linear(input_dim if index == 0 else hidden_dim,
                                 output_dim if index == num_layers - 1 else hidden_dim))
        if index < num_layers - 1:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (all buffers, never trained)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return inputs * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def concat(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """`torch.cat` of chunk results, without the copy when there is one chunk."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)
