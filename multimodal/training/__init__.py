"""Training: the loop, its stages and checkpoints, the caches of what frozen parts compute and
the run's sample sheets."""

from multimodal.errors import TrainingError
from multimodal.training.trainer import Trainer

__all__ = ["Trainer", "TrainingError"]
