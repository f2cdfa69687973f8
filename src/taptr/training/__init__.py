"""Training: the run config, the criterion, optimisation and EMA (docs/architecture.md,
sections 6.1 and 6.3), checkpoints, the loop.

    from taptr.training import TrainConfig, Trainer, load_config
    config = load_config("recipe.toml").override(["run.steps=1000", "run.out=runs/try"])
    Trainer(config).run()

See docs/training.md.
"""

from taptr.training.config import TrainConfig, load_config
from taptr.training.losses import LossWeights, TrackingCriterion
from taptr.training.pretrained import load_backbone_weights
from taptr.training.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "load_config", "LossWeights", "TrackingCriterion",
           "load_backbone_weights", "Trainer", "TrainResult"]
