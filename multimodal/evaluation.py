"""Evaluation: retrieval R@K, caption metrics (BLEU, CIDEr) and text→image attribute accuracy.

Text→image quality on the built-in shapes set is measured without a learned judge: a
deterministic pixel reader (`read_shape_attributes`) names the shape, colour, size and
position of a generated picture, and `attribute_accuracy` compares that with the prompt.
Image→text is measured the same way through `parse_caption_attributes`, and on COCO
through `caption_scores`. `evaluate_shapes` and `evaluate_coco` run all of it over a data
set's validation split for a trained model (what `python evaluate.py` prints).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from multimodal.data.coco import CocoCaptionDataset, DatasetLayoutError, expected_layout
from multimodal.data.shapes import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeSpec,
    all_combinations,
    canonical_caption,
)
from multimodal.data.transforms import to_pil

if TYPE_CHECKING:
    from multimodal.models import GenerativeMultimodalModel

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
    from pycocoevalcap.bleu.bleu import Bleu  # imported here: a large package only COCO scoring needs
    from pycocoevalcap.cider.cider import Cider

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


# -- a trained model on a data set's validation split ---------------------------------------

# What a working model must reach on the shapes set: metric → lowest acceptable value.
SHAPES_TARGETS: dict[str, float] = {
    "retrieval/i2t_R@1": 0.95,
    "retrieval/t2i_R@1": 0.95,
    "caption/all": 0.95,
    "t2i/color": 0.95,
    "t2i/shape": 0.90,
    "t2i/position": 0.90,
    "t2i/size": 0.90,
    "t2i/all": 0.80,
}


def _val_annotations(data_dir: str | os.PathLike) -> dict:
    """The validation split's COCO JSON; a DatasetLayoutError (one line) when it is not there."""
    path = Path(data_dir) / "annotations" / "captions_val2017.json"
    try:
        annotations = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetLayoutError(f"cannot read {path} ({error}); {expected_layout(data_dir)}") from None
    if not isinstance(annotations, dict) or not isinstance(annotations.get("images"), list):
        raise DatasetLayoutError(f"{path} is not a COCO captions file; {expected_layout(data_dir)}")
    return annotations


def is_shapes_dataset(data_dir: str | os.PathLike) -> bool:
    """The built-in shapes set records every image's attributes under "shape"; COCO does not."""
    images = _val_annotations(data_dir)["images"]
    return bool(images) and all("shape" in image for image in images)


def score_shape_images(
    images: Sequence[Image.Image | np.ndarray], specs: Sequence[ShapeSpec]
) -> dict[str, float]:
    """Attribute accuracy of pictures drawn for `specs`, as the pixel reader sees them."""
    predicted = [read_shape_attributes(image) for image in images]
    return attribute_accuracy(predicted, [asdict(spec) for spec in specs])


def _validation_loader(
    model: GenerativeMultimodalModel, data_dir: str | os.PathLike, batch_size: int, limit: int | None
) -> torch.utils.data.DataLoader:
    """The first `limit` (default: all) validation images in file order, at the model's size."""
    dataset = CocoCaptionDataset(data_dir, "val", image_size=model.config.image_size)
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def _embed_and_caption(
    model: GenerativeMultimodalModel, loader: torch.utils.data.DataLoader, progress: bool
) -> tuple[torch.Tensor, list[str], list[int], dict[str, float]]:
    """Image embeddings, greedy captions and image ids from one pass over the images (so each
    is read once), with the seconds spent embedding and captioning."""
    embeddings, captions, image_ids = [], [], []
    seconds = {"retrieval": 0.0, "caption": 0.0}
    for batch in tqdm(loader, desc="embed + caption images", unit="batch", disable=not progress):
        start = time.perf_counter()
        embeddings.append(model.encode_image(batch["image"]).cpu())
        embedded = time.perf_counter()
        captions += model.generate_text_from_image(batch["image"])
        seconds["retrieval"] += embedded - start
        seconds["caption"] += time.perf_counter() - embedded
        image_ids += batch["image_id"].tolist()
    return torch.cat(embeddings), captions, image_ids, seconds


def _embed_texts(model: GenerativeMultimodalModel, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    batches = [list(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    return torch.cat([model.encode_text(batch).cpu() for batch in batches])


def _draw_and_read(
    model: GenerativeMultimodalModel,
    specs: Sequence[ShapeSpec],
    batch_size: int,
    progress: str | None,
    **generation,
) -> dict[str, float]:
    """One picture per spec's canonical caption, in batches, scored by the pixel reader.
    `progress` names the progress bar (None: no bar)."""
    images: list[Image.Image] = []
    batches = range(0, len(specs), batch_size)
    for start in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        prompts = [canonical_caption(spec) for spec in specs[start : start + batch_size]]
        images += [to_pil(image) for image in model.generate_image_from_text(prompts, **generation)]
    return score_shape_images(images, specs)


def _prefixed(prefix: str, scores: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in scores.items()}


def evaluate_shapes(
    model: GenerativeMultimodalModel,
    data_dir: str | os.PathLike,
    batch_size: int = 64,
    num_inference_steps: int = 50,
    guidance_scale: float = 3.0,
    sampler: str = "ddim",
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Every shapes-set metric of `model` on the validation split, and the seconds each took.

    Retrieval ranks the 180 canonical captions (an image's positive is its combination's);
    captions are greedy and parsed back into attributes; text→image draws one picture per
    combination from its canonical caption, with diffusion (noise from `seed`) and with the
    direct fast path, and reads each back. `limit` keeps the first N validation images and
    the first N combinations, for quick checks.
    """
    started = time.perf_counter()
    loader = _validation_loader(model, data_dir, batch_size, limit)
    attributes_by_id = {image["id"]: image["shape"] for image in _val_annotations(data_dir)["images"]}
    image_emb, captions, image_ids, seconds = _embed_and_caption(model, loader, progress)
    truth = [attributes_by_id[image_id] for image_id in image_ids]

    start = time.perf_counter()
    combinations = all_combinations()
    text_emb = _embed_texts(model, [canonical_caption(spec) for spec in combinations], batch_size)
    combination_index = {spec: i for i, spec in enumerate(combinations)}
    positives = [combination_index[ShapeSpec(**attributes)] for attributes in truth]
    retrieval = retrieval_recall(image_emb, text_emb, positives, ks=(1, 5))
    seconds["retrieval"] += time.perf_counter() - start

    caption = attribute_accuracy([parse_caption_attributes(text) for text in captions], truth)

    specs = combinations[:limit]
    start = time.perf_counter()
    diffusion = _draw_and_read(
        model,
        specs,
        batch_size,
        f"text → image ({sampler}, {num_inference_steps} steps)" if progress else None,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
    )
    seconds["t2i"] = time.perf_counter() - start
    start = time.perf_counter()
    fast = _draw_and_read(
        model, specs, batch_size, "text → image (fast path)" if progress else None, use_diffusion=False
    )
    seconds["t2i_fast"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - started

    return (
        {"images": len(image_ids), "prompts": len(specs)}
        | _prefixed("retrieval", retrieval)
        | _prefixed("caption", caption)
        | _prefixed("t2i", diffusion)
        | _prefixed("t2i_fast", fast)
        | _prefixed("seconds", seconds)
    )


def evaluate_coco(
    model: GenerativeMultimodalModel,
    data_dir: str | os.PathLike,
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """BLEU-4 and CIDEr of greedy captions against each image's references, and retrieval
    R@1/5/10 both ways over every caption of the images evaluated (an image's positives are
    its own captions), on the validation split; `limit` keeps the first N images."""
    started = time.perf_counter()
    loader = _validation_loader(model, data_dir, batch_size, limit)
    references: dict[int, list[str]] = defaultdict(list)
    # The same captions, in the same order, as the data loader keeps.
    for annotation in sorted(_val_annotations(data_dir).get("annotations", []), key=lambda a: a.get("id", 0)):
        if annotation["caption"].strip():
            references[annotation["image_id"]].append(annotation["caption"].strip())
    image_emb, captions, image_ids, seconds = _embed_and_caption(model, loader, progress)

    start = time.perf_counter()
    texts: list[str] = []
    positives: list[list[int]] = []
    for image_id in image_ids:
        positives.append(list(range(len(texts), len(texts) + len(references[image_id]))))
        texts += references[image_id]
    retrieval = retrieval_recall(image_emb, _embed_texts(model, texts, batch_size), positives, ks=(1, 5, 10))
    seconds["retrieval"] += time.perf_counter() - start

    start = time.perf_counter()
    scores = caption_scores(
        {image_id: references[image_id] for image_id in image_ids}, dict(zip(image_ids, captions))
    )
    seconds["caption"] += time.perf_counter() - start
    seconds["total"] = time.perf_counter() - started

    return (
        {"images": len(image_ids), "captions": len(texts)}
        | _prefixed("retrieval", retrieval)
        | {"caption/BLEU-4": scores["BLEU-4"], "caption/CIDEr": scores["CIDEr"]}
        | _prefixed("seconds", seconds)
    )


def check_targets(metrics: Mapping[str, float], targets: Mapping[str, float]) -> dict[str, bool]:
    """Whether each targeted metric reaches its lowest acceptable value."""
    return {name: metrics[name] >= goal for name, goal in targets.items()}


def format_targets(metrics: Mapping[str, float], targets: Mapping[str, float]) -> str:
    """The targets as an aligned table (goal, value reached, met or not), below `format_table`'s."""
    met = check_targets(metrics, targets)
    rows = [("target", "goal", "value", "met")]
    rows += [
        (name, f">= {goal:.2f}", f"{metrics[name]:.4f}", "yes" if met[name] else "NO")
        for name, goal in targets.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    rows.insert(1, tuple("-" * width for width in widths))
    lines = [
        "  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])
        for row in rows
    ]
    return "\n".join(lines + [f"{sum(met.values())} of {len(met)} targets met"])
