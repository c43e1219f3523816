"""Evaluation: retrieval R@K, caption metrics (BLEU, CIDEr) and text→image attribute accuracy.

Text→image quality on the built-in shapes set is measured without a learned judge: a
deterministic pixel reader (`read_shape_attributes`) names the shape, colour, size and
position of a generated picture, and `attribute_accuracy` compares that with the prompt.
Image→text is measured the same way through `parse_caption_attributes`, and on COCO
through `caption_scores`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from scipy import ndimage

from multimodal.data.shapes import COLORS, POSITIONS, SHAPES, SIZES

ATTRIBUTES = ("shape", "color", "size", "position")

# The reader's decision constants, measured on clean, blurred and noisy renders at 32–112 px.
_MIN_CONTRAST = 40.0  # 0–255: weaker "objects" are noise or an empty picture
_MIN_AREA = 0.004  # fraction of the image: smaller blobs are specks, not a shape
_SMOOTHING = 0.7  # pixels (Gaussian sigma)
_TRIANGLE_SKEW = -0.1  # vertical skewness; apex-up triangle ≈ -0.57, circle and square 0
_SQUARE_KURTOSIS_RATIO = 1.2  # 4th cumulant along axes / along diagonals; circle 1, square 2

_PALETTE_NAMES = tuple(COLORS)
_PALETTE_DIRECTIONS = np.array([COLORS[name] for name in _PALETTE_NAMES], dtype=np.float64)
_PALETTE_DIRECTIONS /= np.linalg.norm(_PALETTE_DIRECTIONS, axis=1, keepdims=True)


def read_shape_attributes(image: Image.Image | np.ndarray) -> dict[str, str] | None:
    """Name the shape, colour, size and position of the one object in a shapes-set picture.

    `image` is a PIL image or an H×W×3 array. Made for generated pictures (blurred, noisy,
    dim) as much as for clean renders, so every step is relative to the picture itself: the
    background is the median colour (the object covers at most ~30% of the image), the
    object is the largest blob brighter than half its own typical brightness (the
    half-maximum of a blurred edge sits on the true edge), and its colour is compared by
    direction only, so a dim red is still red. Size and position are the data set's values
    nearest to the blob's bounding box. Returns None when no object stands out.
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
    if areas.max() < _MIN_AREA * height * width:
        return None
    blob = labels == 1 + int(areas.argmax())
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

    # Sizes are scales, so compare them on a log axis (the boundary is their geometric mean).
    side = ((right - left) / width + (bottom - top) / height) / 2
    size = min(SIZES, key=lambda name: abs(math.log(side / SIZES[name])))

    centre = np.array([(left + right) / 2 / width, (top + bottom) / 2 / height])
    position = min(POSITIONS, key=lambda name: float(np.linalg.norm(centre - POSITIONS[name])))
    return {"shape": shape, "color": color, "size": size, "position": position}


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


def _words(text: str) -> list[str]:
    """Lower-case words without punctuation: the tokenisation shared by parsing and BLEU/CIDEr."""
    return re.findall(r"[a-z0-9]+", text.lower())


# Every position phrase ("on the left", "in the center") ends in the position's name.
_VOCABULARY = {
    "shape": set(SHAPES),
    "color": set(COLORS),
    "size": set(SIZES),
    "position": set(POSITIONS),
}


def parse_caption_attributes(caption: str) -> dict[str, str | None]:
    """Find the shape, colour, size and position a caption names, whatever its word order.

    An attribute that is missing, or named with two different values ("a red blue circle"),
    is None: a caption that has not committed to one value must not be scored as right.
    """
    words = _words(caption)
    found: dict[str, str | None] = {}
    for attribute, vocabulary in _VOCABULARY.items():
        values = vocabulary.intersection(words)
        found[attribute] = values.pop() if len(values) == 1 else None
    return found


def attribute_accuracy(
    predicted: Sequence[Mapping[str, str | None] | None], truth: Sequence[Mapping[str, str]]
) -> dict[str, float]:
    """Per-attribute accuracy and "all" (every attribute right at once).

    A None prediction (nothing found in the picture) counts as wrong on every attribute.
    """
    if len(predicted) != len(truth) or not truth:
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} truths")
    correct = np.array(
        [
            [pred is not None and pred.get(name) == true[name] for name in ATTRIBUTES]
            for pred, true in zip(predicted, truth)
        ]
    )
    scores = {attribute: float(correct[:, i].mean()) for i, attribute in enumerate(ATTRIBUTES)}
    scores["all"] = float(correct.all(axis=1).mean())
    return scores


def _recall_at_k(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positive: torch.Tensor,
    ks: Sequence[int],
    chunk: int = 1024,
) -> dict[int, float]:
    """Fraction of queries (those with a positive) whose best positive key ranks in the top K.

    Queries go through in chunks so that COCO's 5k × 25k similarities never sit in memory.

    Ties count against the query (a negative scoring as high as the best positive ranks
    ahead of it), so collapsed embeddings score at chance, not 100%.
    """
    hits = torch.zeros(len(ks), dtype=torch.long)
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk] @ keys.T
        is_positive = positive[start : start + chunk]
        best = similarity.masked_fill(~is_positive, -math.inf).amax(dim=1, keepdim=True)
        ahead = ((similarity >= best) & ~is_positive).sum(dim=1)
        answerable = is_positive.any(dim=1)
        hits += torch.stack([((ahead < k) & answerable).sum() for k in ks])
    answerable_count = int(positive.any(dim=1).sum())
    return {k: hits[i].item() / answerable_count for i, k in enumerate(ks)}


def retrieval_recall(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    positives: Sequence[int | Sequence[int]],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K for image→text and text→image retrieval by cosine similarity.

    `positives[i]` is the index (or the list of indices) of image i's correct texts. That one
    form covers both sets: on COCO each image has ~5 captions of its own; on shapes every
    image points at one of the 180 canonical captions, and a caption's correct images are all
    images of its combination. Texts no image points at are left out of text→image.
    """
    if len(positives) != len(image_emb):
        raise ValueError(f"{len(image_emb)} images but {len(positives)} lists of positives")
    image_emb = F.normalize(image_emb.detach().float().cpu(), dim=-1)
    text_emb = F.normalize(text_emb.detach().float().cpu(), dim=-1)
    positive = torch.zeros(len(image_emb), len(text_emb), dtype=torch.bool)
    for i, texts in enumerate(positives):
        positive[i, [texts] if isinstance(texts, int) else list(texts)] = True

    i2t = _recall_at_k(image_emb, text_emb, positive, ks)
    t2i = _recall_at_k(text_emb, image_emb, positive.T, ks)
    return {f"i2t_R@{k}": i2t[k] for k in ks} | {f"t2i_R@{k}": t2i[k] for k in ks}


def caption_scores(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]
) -> dict[str, float]:
    """BLEU-1…4 and CIDEr of one candidate caption per image against its reference captions.

    Scored with pycocoevalcap, but tokenised here (lower case, punctuation dropped) rather
    than with its PTBTokenizer, which needs Java. CIDEr weighs n-grams by how rare they are
    across images, so it needs several images to mean anything (with one image it is 0).
    """
    refs = {key: [" ".join(_words(r)) for r in references[key]] for key in candidates}
    cands = {key: [" ".join(_words(candidates[key]))] for key in candidates}
    bleu, _ = Bleu(4).compute_score(refs, cands, verbose=0)
    cider, _ = Cider().compute_score(refs, cands)
    scores = {f"BLEU-{n}": float(score) for n, score in enumerate(bleu, start=1)}
    return scores | {"CIDEr": float(cider)}


def format_table(metrics: Mapping[str, float | int | str]) -> str:
    """The metrics as an aligned two-column table, for logs and the command line."""
    rows = [("metric", "value")]
    rows += [
        (str(name), f"{value:.4f}" if isinstance(value, float) else str(value))
        for name, value in metrics.items()
    ]
    name_width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    rows.insert(1, ("-" * name_width, "-" * value_width))
    return "\n".join(f"{name:<{name_width}}  {value:>{value_width}}" for name, value in rows)
