"""Image conversions shared by the data loaders and the generation API.

Every model input goes through `load_rgb` (or `as_rgb`, which also takes arrays) then
`image_transform`, and every generated image comes back through `to_pil`, so training and
inference see pixels the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from multimodal.errors import InvalidInputError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def resize_and_crop(image_size: int) -> Callable[[Image.Image], Image.Image]:
    """Resize the shorter side to `image_size` (bicubic), then centre-crop a square: what
    torchvision's Resize + CenterCrop do, in PIL alone (importing torchvision costs seconds).

    No flips: captions say "on the left", and a flipped image would contradict them.
    """

    def transform(image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = sorted((width, height))
        scaled = (image_size, int(image_size * long / short))
        size = scaled if width <= height else scaled[::-1]
        image = image.resize(size, Image.Resampling.BICUBIC)
        left = int(round((size[0] - image_size) / 2.0))
        top = int(round((size[1] - image_size) / 2.0))
        return image.crop((left, top, left + image_size, top + image_size))

    return transform


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


def _over_black(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    out = Image.new("RGB", rgba.size, (0, 0, 0))
    out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return out


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    # PIL's own I;16 -> L conversion clips at 255 instead of rescaling the 0..65535 range.
    values = np.asarray(image, dtype=np.float64).clip(0, 65535)
    gray = np.round(values / 257.0).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def load_rgb(path_or_image: str | os.PathLike | Image.Image, min_size: int | None = None) -> Image.Image:
    """Open a file (or take an image) and return it as 8-bit RGB, whatever its mode.

    Transparent pixels become black (the shapes background); 16-bit images are rescaled,
    not clipped; EXIF rotation is applied so photos come out the way a viewer shows them.
    With `min_size` (the side the image will be resized to), a JPEG at least four times
    larger is decoded at a reduced scale that keeps at least twice `min_size` pixels on each
    side: a 6000×4000 photo then costs a fraction of the time and memory of a full decode.
    """
    if isinstance(path_or_image, Image.Image):
        image = path_or_image
    else:
        with Image.open(path_or_image) as opened:
            if min_size and opened.format == "JPEG":
                opened.draft(None, (2 * min_size, 2 * min_size))
            opened.load()
            image = ImageOps.exif_transpose(opened) if opened.getexif() else opened.copy()

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        return _over_black(image)
    if image.mode.startswith("I;16") or image.mode == "I":
        return _sixteen_bit_to_rgb(image)
    return image.convert("RGB")


def as_rgb(image: ImageInput, min_size: int | None = None) -> Image.Image:
    """8-bit RGB from a path, a PIL image (any mode) or an array (H×W or H×W×C; floats in [0, 1]).
    `min_size`: the side the image is resized to next; a much larger JPEG file is decoded at
    a reduced scale (see `load_rgb`). What cannot be read is an InvalidInputError."""
    if isinstance(image, np.ndarray):
        array = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise InvalidInputError(f"an image array must be H×W or H×W×(1|3|4), got shape {image.shape}")
        scaled = array.clip(0, 1) * 255 if array.dtype.kind == "f" else array.clip(0, 255)
        return load_rgb(Image.fromarray(np.round(scaled).astype(np.uint8)))
    if isinstance(image, Image.Image):
        return load_rgb(image)
    path = Path(image)
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise InvalidInputError(f"no such image file: {path}")
    try:
        return load_rgb(path, min_size=min_size)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise InvalidInputError(f"{path} is not an image that can be read ({error})") from None


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Turn a [3, H, W] (or [1, 3, H, W]) tensor in [-1, 1] into an RGB image."""
    if tensor.dim() == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a [3, H, W] image tensor, got shape {tuple(tensor.shape)}")
    pixels = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())
