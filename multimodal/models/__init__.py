"""The model's components, one per file."""

from multimodal.models.caption_decoder import CaptionDecoder
from multimodal.models.diffusion import LatentDiffusionUNet
from multimodal.models.image_decoder import ImageDecoder
from multimodal.models.image_encoder import ImageEncoder
from multimodal.models.multimodal import CheckpointError, GenerativeMultimodalModel
from multimodal.models.text_encoder import TextEncoder
from multimodal.models.unet import ConditionalUNet2D

__all__ = [
    "CaptionDecoder",
    "CheckpointError",
    "ConditionalUNet2D",
    "GenerativeMultimodalModel",
    "ImageDecoder",
    "ImageEncoder",
    "LatentDiffusionUNet",
    "TextEncoder",
]
