"""Write a data set in any layout as an image folder or as WebDataset shards.

    python -m multimodal.data convert data/coco2017 shards/ --to webdataset --shard-size 1000

The output has explicit splits (train/ and validation/), so a held-out validation set stays
the same after conversion; captions go in a `text` column (metadata.jsonl) or key (each
sample's .json), as lists, exactly as read. It is written into DST.partial and renamed into place: a run cut
short never leaves a half-written DST, and an existing DST is never overwritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from multimodal.data.layouts import read_layout, resolve_format
from multimodal.errors import DatasetLayoutError

TARGETS = ("imagefolder", "webdataset")
SPLIT_FOLDERS = {"train": "train", "val": "validation"}  # the folders written for each split


def _source_samples(src: str, split: str, data_format: str, caption_column: str, image_column: str,
                    val_fraction: float) -> Iterator[tuple[str, str, bytes, list[str]]]:
    """(name, extension, image bytes, captions) of each image of `split` of `src`, in order."""
    layout = resolve_format(src, data_format)
    if layout == "webdataset":
        from multimodal.data.webdataset_source import CAPTION_KEYS, IMAGE_KEYS, WebDatasetSource, captions_of, scan_shard

        source = WebDatasetSource(src, split, 8, caption_column, val_fraction, shuffle=False)
        for shard in source.shards:
            for key, files in scan_shard(shard, read=CAPTION_KEYS + IMAGE_KEYS).items():
                captions = captions_of(files, caption_column)
                if source.keep(key, files) and isinstance(captions, list):
                    extension = next(k for k in IMAGE_KEYS if k in files)
                    yield Path(key).name, extension, files[extension], captions
        return
    found = read_layout(src, layout, caption_column, image_column, val_fraction)
    found.raise_if_fatal()
    records = found.splits[split]
    for path, captions in zip(records.paths, records.captions):
        yield Path(path).stem, Path(path).suffix.lstrip(".").lower(), Path(path).read_bytes(), captions


def _unique(name: str, taken: set[str]) -> str:
    """A WebDataset-safe key (no dots: they start the extension) not yet in `taken`."""
    base = re.sub(r"[^\w-]", "_", name) or "image"
    key, number = base, 1
    while key in taken:
        number += 1
        key = f"{base}_{number}"
    taken.add(key)
    return key


def convert(src: str, dst: str | os.PathLike, to: str, data_format: str = "auto", caption_column: str = "text",
            image_column: str = "file_name", val_fraction: float = 0.05, shard_size: int = 1000) -> dict[str, int]:
    """Write `src` (any layout) as `to` into `dst`; returns the images written per split."""
    if to not in TARGETS:
        raise DatasetLayoutError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    target = Path(dst)
    if target.exists():
        raise DatasetLayoutError(f"{target} already exists; convert writes a new folder")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an earlier, interrupted run left
    try:
        counts = {split: _write_split(partial / folder, to, shard_size,
                                      _source_samples(src, split, data_format, caption_column, image_column,
                                                      val_fraction))
                  for split, folder in SPLIT_FOLDERS.items()}
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # a source that cannot be read leaves nothing behind
        raise
    partial.rename(target)
    return counts


def _write_split(folder: Path, to: str, shard_size: int, samples: Iterator[tuple[str, str, bytes, list[str]]]) -> int:
    """Write one split's samples into `folder` as `to`; returns how many."""
    folder.mkdir(parents=True)
    taken: set[str] = set()
    count = 0
    if to == "imagefolder":
        with open(folder / "metadata.jsonl", "w", encoding="utf-8") as metadata:
            for name, extension, data, captions in samples:
                file_name = f"{_unique(name, taken)}.{extension}"
                (folder / file_name).write_bytes(data)
                metadata.write(json.dumps({"file_name": file_name, "text": captions}) + "\n")
                count += 1
        return count
    import webdataset as wds

    with wds.ShardWriter(str(folder / f"{folder.name}-%06d.tar"), maxcount=shard_size, verbose=0) as writer:
        for name, extension, data, captions in samples:
            # .json, not .txt: a caption may hold a line break (a few COCO captions do).
            writer.write({"__key__": _unique(name, taken), extension: data, "json": {"text": captions}})
            count += 1
    return count
