"""Training: the loop, its stages and checkpoints, the text-feature cache and the run's pictures."""

from multimodal.errors import TrainingError
from multimodal.training.trainer import Trainer

__all__ = ["Trainer", "TrainingError"]
