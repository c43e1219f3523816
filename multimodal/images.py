"""Pictures in and out without torch: reading any file, PIL image or array as 8-bit RGB, the
resize and crop every model input goes through, the names of generated pictures, and writing
a picture safely.

Torch-free on purpose: the ONNX runner (`multimodal.onnx_run`) reads and writes pictures
exactly as the PyTorch code does, without importing torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from multimodal.errors import InvalidInputError
from multimodal.files import check_writable, file_written_in_place

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


# Image formats a generated picture can be written in, by file extension (PIL's names).
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_format(path: str | os.PathLike) -> str:
    """The format a file name asks for by its extension (png, jpg, webp); others are refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        found = f"{suffix!r}" if suffix else "a name without an extension"
        raise InvalidInputError(f"{path}: cannot write an image as {found}; use {', '.join(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[suffix]


def slugify(text: str, max_length: int = 60) -> str:
    """A file-name-safe form of a prompt: 'A red circle!' → 'a-red-circle' (Unicode letters stay)."""
    slug = re.sub(r"[^\w]+", "-", text.lower()).strip("-_")
    return slug[:max_length].rstrip("-_") or "prompt"


def image_file_names(prompts: Sequence[str], count: int, extension: str = ".png") -> list[list[str]]:
    """`names[i][j]`: `<prompt slug>_<j><extension>` for image j of prompt i; prompts with the
    same slug get a numbered suffix so that no file overwrites another."""
    names, used = [], set()
    for prompt in prompts:
        slug, n = slugify(prompt), 2
        while slug in used:
            slug, n = f"{slugify(prompt)}-{n}", n + 1
        used.add(slug)
        names.append([f"{slug}_{j}{extension}" for j in range(count)])
    return names


# The longest side, in short sides, that a picture is read and resized whole; of a longer one only
# the middle that long is kept (the square crop every model input ends in keeps less still).
MAX_ASPECT = 4


def _middle(image: Image.Image) -> Image.Image:
    """`image`, or its middle `MAX_ASPECT` short sides long when it is longer than that."""
    width, height = image.size
    short, long = sorted((width, height))
    if long <= MAX_ASPECT * short:
        return image
    keep = MAX_ASPECT * short
    start = (long - keep) // 2
    return image.crop((start, 0, start + keep, height) if width > height else (0, start, width, start + keep))


def resize_and_crop(image_size: int) -> Callable[[Image.Image], Image.Image]:
    """Resize the shorter side to `image_size` (bicubic), then centre-crop a square: what
    torchvision's Resize + CenterCrop do, in PIL alone (importing torchvision costs seconds).

    Of a picture longer than `MAX_ASPECT` short sides only the middle that long is resized, so
    the work is bounded by the output: a 1×200,000 strip resized whole would be 200,000 times
    the output. Pictures within that aspect are resized whole, as they always were.
    No flips: captions say "on the left", and a flipped image would contradict them.
    """

    def transform(image: Image.Image) -> Image.Image:
        image = _middle(image)
        width, height = image.size
        short, long = sorted((width, height))
        scaled = (image_size, int(image_size * long / short))
        size = scaled if width <= height else scaled[::-1]
        image = image.resize(size, Image.Resampling.BICUBIC)
        left = int(round((size[0] - image_size) / 2.0))
        top = int(round((size[1] - image_size) / 2.0))
        return image.crop((left, top, left + image_size, top + image_size))

    return transform


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
    Of a picture longer than `MAX_ASPECT` short sides only the middle that long is kept (all
    that `resize_and_crop` uses), before any copy or conversion: a tiny file of a 1×24,000,000
    strip then costs its decoding, not several copies of it.
    With `min_size` (the side the image will be resized to), a JPEG at least four times
    larger is decoded at a reduced scale that keeps at least twice `min_size` pixels on each
    side: a 6000×4000 photo then costs a fraction of the time and memory of a full decode.
    """
    if isinstance(path_or_image, Image.Image):
        image = _middle(path_or_image)
    else:
        with Image.open(path_or_image) as opened:
            if min_size and opened.format == "JPEG":
                opened.draft(None, (2 * min_size, 2 * min_size))
            opened.load()
            rotated = bool(opened.getexif())
            image = _middle(opened)  # a crop keeps the EXIF rotation (in its info) for the next line
            if rotated:
                image = ImageOps.exif_transpose(image)
            elif image is opened:
                image = opened.copy()  # the file closes when this block ends

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


def save_image(image: Image.Image, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `image` in the format its extension names; an existing file is kept unless
    `overwrite`. Written beside the target and renamed into place, so a crash leaves no half file."""
    path = Path(path)
    kind = image_format(path)
    if path.exists() and not overwrite:
        raise InvalidInputError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_written_in_place(path) as temporary:
            image.save(temporary, format=kind, **({"quality": 95} if kind in ("JPEG", "WEBP") else {}))
    except OSError as error:  # e.g. a full disk: the user's path, not the temporary file's
        raise InvalidInputError(f"cannot write {path}: {error.strerror or error}") from None
    return path
