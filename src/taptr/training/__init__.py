"""Training: losses, optimisation and EMA (docs/architecture.md, sections 6.1 and 6.3),
checkpoints, the loop.

    from taptr.training import TrainConfig, Trainer
    Trainer(TrainConfig(preset="small", steps=1000, out="runs/try")).run()

See docs/training.md.
"""

from taptr.training.losses import LossWeights, tracking_loss
from taptr.training.pretrained import load_backbone_weights
from taptr.training.trainer import TrainConfig, Trainer, TrainResult

__all__ = ["LossWeights", "tracking_loss", "load_backbone_weights", "TrainConfig", "Trainer",
           "TrainResult"]
