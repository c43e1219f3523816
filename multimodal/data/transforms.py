"""Image conversions shared by the data loaders and the generation API.

Every model input goes through `load_rgb` (or `as_rgb`, which also takes arrays) then
`image_transform`, and every generated image comes back through `to_pil`, so training and
inference see pixels the same way. The torch-free half lives in `multimodal.images`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image

from multimodal.images import ImageInput, as_rgb, load_rgb, resize_and_crop

__all__ = ["ImageInput", "as_rgb", "from_uint8", "image_transform", "load_rgb", "resize_and_crop", "to_pil",
           "to_uint8_tensor"]


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as a (3, H, W) uint8 tensor: a quarter of the memory of floats, for caches."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → floats in [-1, 1], by the same operations as ToTensor + Normalize(0.5, 0.5)."""
    return pixels.float().div(255).sub(0.5).div(0.5)


def image_transform(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """What every model input goes through: `resize_and_crop`, then scaled to [-1, 1]."""
    crop = resize_and_crop(image_size)
    return lambda image: from_uint8(to_uint8_tensor(crop(image)))


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Turn a [3, H, W] (or [1, 3, H, W]) tensor in [-1, 1] into an RGB image."""
    if tensor.dim() == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a [3, H, W] image tensor, got shape {tuple(tensor.shape)}")
    pixels = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())
