"""Training: the loop, its checkpoints, the text-feature cache and the run's pictures."""

from multimodal.training.trainer import Trainer, TrainingError, pick_device

__all__ = ["Trainer", "TrainingError", "pick_device"]
