"""Exponential moving average of a model's weights.

Like the official `ModelEma`, it covers every state entry (parameters and buffers); integer
buffers are copied. Two deliberate differences (docs/architecture.md, sections 6.3, 9.3):
* it is updated once per optimizer step, not once per micro-batch, so the averaging horizon
  does not depend on gradient accumulation; tensors that appear under two names in the state
  dict (the official heads) are updated once, not twice;
* the decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so short runs and
  fine-tunes are not dominated by the initial weights (official: constant 0.9997 per
  micro-batch, about 0.9988 per optimizer step with 4 micro-batches).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from taptr.models.state_dict import load_state_strict


class ModelEma:
    """Holds `module`, an averaged copy of a model, in eval mode and without gradients."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next `update` applies."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    def _paired_entries(self, model: nn.Module):
        """(ema tensor, model tensor) for each distinct state tensor, each once."""
        model_state = model.state_dict(keep_vars=True)
        seen: set[int] = set()
        for name, ema_tensor in self.module.state_dict(keep_vars=True).items():
            if id(ema_tensor) in seen:
                continue
            seen.add(id(ema_tensor))
            yield ema_tensor.data, model_state[name].data

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward `model` (unwrapped, same architecture)."""
        decay = self.current_decay()
        averaged, current, copied, sources = [], [], [], []
        for ema_tensor, model_tensor in self._paired_entries(model):
            if ema_tensor.is_floating_point():
                averaged.append(ema_tensor)
                current.append(model_tensor.to(ema_tensor.dtype))
            else:
                copied.append(ema_tensor)
                sources.append(model_tensor)
        if averaged:
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for target, source in zip(copied, sources):
            target.copy_(source)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {
            "module": self.module.state_dict(),
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        load_state_strict(self.module, state["module"])
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
