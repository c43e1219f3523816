"""multimodal: one image–text space, generation in both directions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal.config import ModelConfig, SamplingConfig, TrainConfig, model_preset, train_preset
from multimodal.errors import CheckpointError, InvalidInputError

if TYPE_CHECKING:
    from multimodal.generation import ImageTextGenerator
    from multimodal.models import GenerativeMultimodalModel


def __getattr__(name: str) -> Any:
    """torch, transformers and diffusers take seconds to import, so these names load on first
    use: the command lines parse their arguments (and answer --help) without waiting."""
    if name == "ImageTextGenerator":
        from multimodal.generation import ImageTextGenerator

        return ImageTextGenerator
    if name == "GenerativeMultimodalModel":
        from multimodal.models import GenerativeMultimodalModel

        return GenerativeMultimodalModel
    raise AttributeError(f"module 'multimodal' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "GenerativeMultimodalModel",
    "ImageTextGenerator",
    "InvalidInputError",
    "ModelConfig",
    "SamplingConfig",
    "TrainConfig",
    "model_preset",
    "train_preset",
]
__version__ = "0.1.0"
