"""multimodal: one image–text space, generation in both directions."""

from multimodal.config import ModelConfig, model_preset
from multimodal.generation import ImageTextGenerator
from multimodal.models import CheckpointError, GenerativeMultimodalModel

__all__ = ["CheckpointError", "GenerativeMultimodalModel", "ImageTextGenerator", "ModelConfig", "model_preset"]
__version__ = "0.1.0"
