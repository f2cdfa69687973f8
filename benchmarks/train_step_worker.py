"""One side of `train_speed.py --reference`: time training steps of given weights on a given
batch with whatever `taptr` is first on the import path, and save the first step's gradients.

    python train_step_worker.py CASE.pt OUT.pt STEPS WARMUP

CASE.pt holds {"config": ModelConfig fields, "state": state dict, "batch": make_batch dict}.
Only APIs that exist unchanged since commit f75c4b0 are used here, but for the loss: the
`TrackingCriterion` object where the tree has it, the `tracking_loss` function of older trees
(the same objective).
"""

from __future__ import annotations

import sys
import time

import torch


def main() -> None:
    case_path, out_path, steps, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    from taptr.config import ModelConfig
    from taptr.models import build_model
    from taptr.training.ema import ModelEma
    from taptr.training.optim import build_optimizer

    case = torch.load(case_path, weights_only=False)
    known = set(ModelConfig.__dataclass_fields__)
    config = ModelConfig(**{k: v for k, v in case["config"].items() if k in known})
    model = build_model(config)
    model.load_state_dict(case["state"])
    try:
        from taptr.training.losses import TrackingCriterion

        loss_function = TrackingCriterion(config.input_size)
    except ImportError:  # trees before the criterion object (up to 723522c)
        from taptr.training.losses import tracking_loss as loss_function
    model.train()
    model.backbone.requires_grad_(False)  # taptr train's frozen backbone (lr_backbone 0)
    ema = ModelEma(model)
    optimizer = build_optimizer(model, 5e-4, 0.0, 1e-4)
    batch = case["batch"]
    gradients = {}

    def step(record: bool) -> None:
        output = model(batch["video"], batch["query_points"], batch["query_frames"],
                       return_layers=True)
        loss, _ = loss_function(output, batch)
        loss.backward()
        if record:
            gradients.update({name: p.grad.detach().clone() for name, p in model.named_parameters()
                              if p.grad is not None})
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)

    torch.manual_seed(0)  # the same dropout draws on both sides
    for index in range(warmup):
        step(record=index == 0)
    start = time.perf_counter()
    for index in range(steps):
        step(record=warmup == 0 and index == 0)
    seconds = (time.perf_counter() - start) / max(steps, 1)
    torch.save({"seconds_per_step": seconds, "gradients": gradients}, out_path)
    print(f"{seconds:.4f}")


if __name__ == "__main__":
    main()
