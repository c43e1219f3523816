"""The model's components, one per file."""

from multimodal.errors import CheckpointError
from multimodal.models.caption_decoder import CaptionDecoder
from multimodal.models.diffusion import LatentDiffusion, LatentDiffusionUNet
from multimodal.models.image_decoder import ImageDecoder
from multimodal.models.image_encoder import ImageEncoder
from multimodal.models.multimodal import LOSSES, GenerativeMultimodalModel
from multimodal.models.text_encoder import TextEncoder
from multimodal.models.unet import ConditionalUNet2D

__all__ = [
    "LOSSES",
    "CaptionDecoder",
    "CheckpointError",
    "ConditionalUNet2D",
    "GenerativeMultimodalModel",
    "ImageDecoder",
    "ImageEncoder",
    "LatentDiffusion",
    "LatentDiffusionUNet",
    "TextEncoder",
]
