"""The one place a data set is opened: `--data-dir` and `--data-format` → a split to train or
evaluate on, whatever its layout (train.py, evaluate.py and the bench all come here)."""

from __future__ import annotations

import os
import warnings

import torch

from multimodal.data.caption_dataset import CaptionDataset
from multimodal.data.coco import CocoCaptionDataset
from multimodal.data.layouts import CAPTIONLESS, read_layout, resolve_format
from multimodal.errors import DatasetLayoutError

# The layouts read as streams, never all at once: what per-image options cannot apply to.
STREAMED = {"webdataset": "WebDataset shards", "parquet": "parquet files"}


def has_captions(data_dir: str | os.PathLike, data_format: str = "auto") -> bool:
    """Whether the data set's images come with captions: on one without (the images-only layout)
    a run trains the autoencoder and an unconditional diffusion model. Reads no image."""
    return resolve_format(data_dir, data_format) not in CAPTIONLESS


def open_split(
    data_dir: str | os.PathLike,
    split: str,
    image_size: int,
    data_format: str = "auto",
    caption_column: str = "text",
    image_column: str = "file_name",
    val_fraction: float = 0.05,
    all_pairs: bool = False,
    seed: int = 0,
    cache_images: bool = False,
) -> torch.utils.data.Dataset:
    """The `split` ("train" or "val") of the data set at `data_dir`: a map-style dataset, or for
    WebDataset shards and parquet files a streamed IterableDataset. A DatasetLayoutError (one line) names the
    first problem that would stop training (the fast checks of `python -m multimodal.data check`); what
is only left out (missing images, images without captions, duplicates) is counted in one warning."""
    layout = resolve_format(data_dir, data_format)
    if layout == "coco":
        return CocoCaptionDataset(data_dir, split, image_size, all_pairs, seed, cache_images)
    ignored = [flag for flag, on in (("--all-pairs", all_pairs), ("--cache-images", cache_images)) if on]
    if layout in STREAMED and ignored:
        raise DatasetLayoutError(f"{' and '.join(ignored)} cannot apply to streamed {STREAMED[layout]}; "
                                 f"leave {'them' if len(ignored) > 1 else 'it'} out")
    if layout == "webdataset":
        from multimodal.data.webdataset_source import WebDatasetSource  # webdataset loads only for shards

        return WebDatasetSource(str(data_dir), split, image_size, caption_column, val_fraction, seed)
    if layout == "parquet":
        from multimodal.data.parquet_source import ParquetSource, hub_image_column  # pyarrow loads only for parquet

        return ParquetSource(str(data_dir), split, image_size, caption_column, hub_image_column(image_column),
                             val_fraction, seed)
    found = read_layout(data_dir, layout, caption_column, image_column, val_fraction)
    found.raise_if_fatal()
    left_out = [problem for problem in found.problems if not problem.fatal]
    if left_out and split == "train":  # said once, not for each split
        warnings.warn(f"{len(left_out)} problems in {data_dir} left out of training, e.g. {left_out[0]} "
                      f"(python -m multimodal.data check {data_dir} lists them)", stacklevel=2)
    return CaptionDataset(found.splits[split], f"{data_dir} ({split} split)", image_size, all_pairs, seed,
                          cache_images, found.num_missing.get(split, 0))
