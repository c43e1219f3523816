"""Reading the shapes set back: what a picture shows and what a caption says.

The inverse of `shapes.py`'s renderer and captions, made to judge generated output without a
learned model: `read_shape_attributes` names the shape, colour, size and position of the one
object in a picture, and `parse_caption_attributes` finds the same four in a caption.
`find_objects` is the pixel reader itself, which the scenes set's reader uses for two objects.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

from multimodal.data.shapes import PALETTE, POSITIONS, SHAPES, SIZES
from multimodal.metrics import words

# The reader's decision constants, measured on clean, blurred and noisy renders at 32–112 px.
_MIN_CONTRAST = 40.0  # 0–255: weaker "objects" are noise or an empty picture
_MIN_AREA = 0.004  # fraction of the image: smaller blobs are specks, not a shape
_SMOOTHING = 0.7  # pixels (Gaussian sigma)
_TRIANGLE_SKEW = -0.1  # vertical skewness; apex-up triangle ≈ -0.57, circle and square 0
_SQUARE_KURTOSIS_RATIO = 1.2  # 4th cumulant along axes / along diagonals; circle 1, square 2

_PALETTE_NAMES = tuple(PALETTE)  # the extra colours too: a set drawn with them is scored the same way
_PALETTE_DIRECTIONS = np.array([PALETTE[name] for name in _PALETTE_NAMES], dtype=np.float64)
_PALETTE_DIRECTIONS /= np.linalg.norm(_PALETTE_DIRECTIONS, axis=1, keepdims=True)


def find_objects(image: Image.Image | np.ndarray, count: int = 1) -> list[dict] | None:
    """The `count` largest objects of a picture on a plain background, largest first, each as
    its shape, colour and bounding box (fractions of the image side: left, top, right, bottom);
    None when fewer than `count` objects stand out.

    Made for generated pictures (blurred, noisy, dim) as much as for clean renders, so every
    step is relative to the picture itself: the background is the median colour (objects cover
    at most ~30% of the image), an object is a blob brighter than half the objects' typical
    brightness (the half-maximum of a blurred edge sits on the true edge), and its colour is
    compared by direction only, so a dim red is still red.
    """
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    # Float arrays hold [0, 1] (torchvision's convention), integer arrays [0, 255].
    rgb = array * 255.0 if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)
    height, width = rgb.shape[:2]

    excess = np.clip(rgb - np.median(rgb.reshape(-1, 3), axis=0), 0.0, None)
    # Smoothing by less than a pixel keeps single noisy pixels from growing the blob's outline.
    strength = ndimage.gaussian_filter(excess.max(axis=2), _SMOOTHING)
    peak = np.percentile(strength, 99)
    if peak < _MIN_CONTRAST:
        return None
    level = np.median(strength[strength > peak / 2])
    labels, _ = ndimage.label(strength > level / 2)
    areas = np.bincount(labels.ravel())[1:]  # the brightest pixel is always in some blob
    largest = np.argsort(areas)[::-1][:count]
    if len(largest) < count or areas[largest[-1]] < _MIN_AREA * height * width:
        return None
    return [_describe(excess, strength, labels == 1 + int(index)) for index in largest]


def _describe(excess: np.ndarray, strength: np.ndarray, blob: np.ndarray) -> dict:
    """Shape, colour and box of one blob."""
    height, width = blob.shape
    colour = np.median(excess[blob], axis=0)
    blob = ndimage.binary_fill_holes(blob)
    rows = np.flatnonzero(blob.any(axis=1))
    cols = np.flatnonzero(blob.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1

    # Shape from the blob's intensity cumulants, which a blur leaves unchanged (a Gaussian's
    # third and fourth cumulants are zero, and cumulants add under convolution): an apex-up
    # triangle's mass trails off upwards; a square's fourth cumulant is twice as large along its
    # axes as along its diagonals, a circle's is the same in every direction.
    weight = strength * ndimage.binary_dilation(blob, iterations=3)
    skew, axis_over_diagonal = _shape_cumulants(weight)
    if skew < _TRIANGLE_SKEW:
        shape = "triangle"
    else:
        shape = "square" if axis_over_diagonal > _SQUARE_KURTOSIS_RATIO else "circle"

    direction = colour / max(np.linalg.norm(colour), 1e-9)
    color = _PALETTE_NAMES[int(np.argmax(_PALETTE_DIRECTIONS @ direction))]
    box = (left / width, top / height, right / width, bottom / height)
    return {"shape": shape, "color": color, "box": box}


def read_shape_attributes(image: Image.Image | np.ndarray) -> dict[str, str] | None:
    """Name the shape, colour, size and position of the one object in a shapes-set picture
    (the largest, as `find_objects` sees it), or None when no object stands out. Size and
    position are the data set's values nearest to the object's bounding box."""
    found = find_objects(image)
    if found is None:
        return None
    thing = found[0]
    left, top, right, bottom = thing["box"]
    # Sizes are scales, so compare them on a log axis (the boundary is their geometric mean).
    side = ((right - left) + (bottom - top)) / 2
    size = min(SIZES, key=lambda name: abs(math.log(side / SIZES[name])))
    centre = np.array([(left + right) / 2, (top + bottom) / 2])
    position = min(POSITIONS, key=lambda name: float(np.linalg.norm(centre - POSITIONS[name])))
    return {"shape": thing["shape"], "color": thing["color"], "size": size, "position": position}


def _shape_cumulants(weight: np.ndarray) -> tuple[float, float]:
    """Vertical skewness of an intensity distribution, and the ratio of its fourth cumulants
    (summed over the x and y axes) to the same along the two diagonals."""
    ys, xs = np.indices(weight.shape, dtype=np.float64)
    p = weight / weight.sum()
    x = xs - (p * xs).sum()
    y = ys - (p * ys).sum()

    def fourth_cumulant(u: np.ndarray) -> float:
        return (p * u**4).sum() - 3 * (p * u**2).sum() ** 2

    skew = (p * y**3).sum() / (p * y**2).sum() ** 1.5
    diagonal = fourth_cumulant((x + y) / math.sqrt(2)) + fourth_cumulant((x - y) / math.sqrt(2))
    return float(skew), float((fourth_cumulant(x) + fourth_cumulant(y)) / diagonal)


# Every position phrase ("on the left", "in the center") ends in the position's name.
_VOCABULARY = {
    "shape": set(SHAPES),
    "color": set(PALETTE),
    "size": set(SIZES),
    "position": set(POSITIONS),
}


def parse_caption_attributes(caption: str) -> dict[str, str | None]:
    """Find the shape, colour, size and position a caption names, whatever its word order.

    An attribute that is missing, or named with two different values ("a red blue circle"),
    is None: a caption that has not committed to one value must not be scored as right.
    """
    caption_words = words(caption)
    found: dict[str, str | None] = {}
    for attribute, vocabulary in _VOCABULARY.items():
        values = vocabulary.intersection(caption_words)
        found[attribute] = values.pop() if len(values) == 1 else None
    return found
