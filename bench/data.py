"""Data loading: images per second of the training DataLoader (decode, resize, tokenise, collate)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from functools import partial

from torch.utils.data import DataLoader
from transformers import BertTokenizerFast

from multimodal.data import CaptionCollator, CocoCaptionDataset, generate_shapes_dataset
from multimodal.models.text_encoder import tokenize
from multimodal.training.trainer import default_num_workers

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "coco-mini"
BATCH = 16


@dataclass
class DataSet:
    name: str
    root: Path | None  # None: not on this machine, skipped
    image_size: int
    max_text_length: int


def shapes_dir(scratch: Path) -> Path:
    """The repository's shapes set, or one generated into `scratch` where it is missing."""
    if (REPO / "data" / "shapes" / "annotations").is_dir():
        return REPO / "data" / "shapes"
    return generate_shapes_dataset(scratch / "shapes", progress=False)


def loader_throughput(dataset: CocoCaptionDataset, collate: CaptionCollator, workers: int, images: int, passes: int) -> float:
    """Median images/s over `passes` passes of `images` samples (after one warm-up pass). Each
    pass starts its workers anew, as every epoch of the trainer does; the first batch, which
    waits for them to start, is not counted."""
    order = [i % len(dataset) for i in range(images)]
    rates = []
    for _ in range(passes + 1):
        batches = iter(DataLoader(dataset, batch_size=BATCH, sampler=order, num_workers=workers, collate_fn=collate))
        next(batches)
        start = time.perf_counter()
        count = sum(len(batch["captions"]) for batch in batches)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def bench_data(sets: list[DataSet], tokenizer_path: str, images: int, passes: int) -> list[dict]:
    """Rows of (set, image size, workers) → images/s, with the trainer's collate (tokenising)."""
    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_path)
    rows = []
    for data in sets:
        row = {"set": data.name, "folder": data.root.name if data.root else "", "image_size": data.image_size}
        if data.root is None:
            rows.append(row | {"skipped": "not found on this machine"})
            continue
        dataset = CocoCaptionDataset(data.root, "train", data.image_size)
        collate = CaptionCollator(partial(tokenize, tokenizer, max_length=data.max_text_length))
        for workers in sorted({0, 2, default_num_workers()}):
            # Enough batches that each worker makes several: its start-up is not what is measured.
            count = max(images, 4 * BATCH * workers)
            rows.append(row | {"workers": workers, "images_per_s": loader_throughput(dataset, collate, workers, count, passes)})
    return rows
