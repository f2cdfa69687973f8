"""Optimizer and learning-rate schedule (docs/architecture.md, section 6.3).

AdamW (the official optimizer) with two parameter groups: parameters whose name contains
"backbone" use the backbone learning rate, all others the main one; weight decay applies to every parameter (as in the
official code). The schedule is a per-optimizer-step factor on both groups: linear warmup, then
cosine decay to `min_factor`, a multi-step drop (official: x0.1 at 2/3 and 13/15 of training),
or constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from taptr.errors import TaptrError

SCHEDULES = ("cosine", "multistep", "constant")


def parameter_groups(model: nn.Module, lr: float, lr_backbone: float,
                     weight_decay: float) -> list[dict]:
    """Parameter groups: [main, backbone]; frozen parameters are left out, empty groups dropped."""
    main, backbone = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (backbone if "backbone" in name else main).append(parameter)
    groups = [
        {"params": main, "lr": lr, "weight_decay": weight_decay, "name": "main"},
        {"params": backbone, "lr": lr_backbone, "weight_decay": weight_decay, "name": "backbone"},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, lr: float, lr_backbone: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over `parameter_groups` (fused on CUDA). Raises TaptrError for a model without
    trainable parameters."""
    groups = parameter_groups(model, lr, lr_backbone, weight_decay)
    if not groups:
        raise TaptrError("the model has no trainable parameters")
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=on_cuda or None)


@dataclass
class LrSchedule:
    """Factor applied to the base learning rates at optimizer step `step` (0-based).

    kind: 'cosine', 'multistep' or 'constant'. warmup_steps: linear ramp from 1/warmup to 1.
    milestones: fractions of total_steps where 'multistep' multiplies by `gamma`.
    min_factor: the final factor of 'cosine'.
    """

    kind: str = "cosine"
    total_steps: int = 1
    warmup_steps: int = 0
    milestones: tuple[float, ...] = (2 / 3, 13 / 15)
    gamma: float = 0.1
    min_factor: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise TaptrError(f"unknown schedule {self.kind!r}; choose one of {SCHEDULES}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "multistep":
            drops = sum(step >= milestone * self.total_steps for milestone in self.milestones)
            return self.gamma ** drops
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer,
                    schedule: LrSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step. Its state dict holds only numbers."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
