"""Evaluation drivers: a trained model on a data set's validation split.

`evaluate_shapes` and `evaluate_coco` run the metrics of `metrics.py` over the validation
images (what `python evaluate.py` prints). Text→image quality on the built-in shapes set is
measured without a learned judge: the pixel reader of `data/shapes_reader.py` names what a
generated picture shows, and its caption parser what a generated caption says.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from multimodal.config import SamplingConfig
from multimodal.data.coco import CocoCaptionDataset
from multimodal.data.shapes import ShapeSpec, all_combinations, canonical_caption, dataset_colors
from multimodal.data.shapes_reader import parse_caption_attributes, read_shape_attributes
from multimodal.data.transforms import to_pil
from multimodal.metrics import attribute_accuracy, caption_scores, retrieval_recall

if TYPE_CHECKING:
    from multimodal.models import GenerativeMultimodalModel


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


def is_shapes_dataset(dataset: CocoCaptionDataset) -> bool:
    """The built-in shapes set records every image's attributes under "shape"; COCO does not."""
    return all("shape" in info for info in dataset.image_info.values())


def score_shape_images(
    images: Sequence[Image.Image | np.ndarray], specs: Sequence[ShapeSpec]
) -> dict[str, float]:
    """Attribute accuracy of pictures drawn for `specs`, as the pixel reader sees them."""
    predicted = [read_shape_attributes(image) for image in images]
    return attribute_accuracy(predicted, [asdict(spec) for spec in specs])


def _loader(dataset: CocoCaptionDataset, batch_size: int, limit: int | None) -> torch.utils.data.DataLoader:
    """The first `limit` (default: all) images of `dataset` in file order."""
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
    sampling: SamplingConfig,
    seed: int,
) -> dict[str, float]:
    """One picture per spec's canonical caption, in batches, scored by the pixel reader; the
    noise of every batch comes from one generator seeded with `seed`. `progress` names the
    progress bar (None: no bar)."""
    images: list[Image.Image] = []
    generator = torch.Generator().manual_seed(seed)
    batches = range(0, len(specs), batch_size)
    for start in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        prompts = [canonical_caption(spec) for spec in specs[start : start + batch_size]]
        images += [to_pil(image) for image in model.generate_image_from_text(prompts, sampling, generator)]
    return score_shape_images(images, specs)


def _prefixed(prefix: str, scores: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in scores.items()}


def evaluate_shapes(
    model: GenerativeMultimodalModel,
    dataset: CocoCaptionDataset,
    batch_size: int = 64,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Every shapes-set metric of `model` on `dataset` (a validation split of the shapes set, at
    the model's image size), and the seconds each took.

    The combinations are those of the colours the set was drawn in (180 for the standard six). Retrieval
    ranks their canonical captions (an image's positive is its combination's);
    captions are greedy and parsed back into attributes; text→image draws one picture per
    combination from its canonical caption, as `sampling` says (noise from `seed`) and with
    the direct fast path, and reads each back. `limit` keeps the first N validation images
    and the first N combinations, for quick checks.
    """
    sampling = sampling or SamplingConfig()
    started = time.perf_counter()
    loader = _loader(dataset, batch_size, limit)
    attributes_by_id = {image_id: info["shape"] for image_id, info in dataset.image_info.items()}
    image_emb, captions, image_ids, seconds = _embed_and_caption(model, loader, progress)
    truth = [attributes_by_id[image_id] for image_id in image_ids]

    start = time.perf_counter()
    combinations = all_combinations(dataset_colors(dataset.root))
    text_emb = _embed_texts(model, [canonical_caption(spec) for spec in combinations], batch_size)
    combination_index = {spec: i for i, spec in enumerate(combinations)}
    positives = [combination_index[ShapeSpec(**attributes)] for attributes in truth]
    retrieval = retrieval_recall(image_emb, text_emb, positives, ks=(1, 5))
    seconds["retrieval"] += time.perf_counter() - start

    caption = attribute_accuracy([parse_caption_attributes(text) for text in captions], truth)

    specs = combinations[:limit]
    start = time.perf_counter()
    label = f"text → image ({sampling.sampler}, {sampling.num_inference_steps} steps)"
    diffusion = _draw_and_read(
        model, specs, batch_size, label if progress else None, sampling.replace(use_diffusion=True), seed
    )
    seconds["t2i"] = time.perf_counter() - start
    start = time.perf_counter()
    fast = _draw_and_read(
        model, specs, batch_size, "text → image (fast path)" if progress else None,
        sampling.replace(use_diffusion=False), seed,
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
    dataset: CocoCaptionDataset,
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """BLEU-4 and CIDEr of greedy captions against each image's references, and retrieval
    R@1/5/10 both ways over every caption of the images evaluated (an image's positives are
    its own captions), on `dataset` (a validation split at the model's image size); `limit`
    keeps the first N images."""
    started = time.perf_counter()
    loader = _loader(dataset, batch_size, limit)
    references = dataset.references
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
