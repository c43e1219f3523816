"""Training: the loop, its checkpoints, the text-feature cache and the run's pictures."""

from multimodal.training.trainer import Trainer, TrainingError

__all__ = ["Trainer", "TrainingError"]
