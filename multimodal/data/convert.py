"""Write a data set in any layout as an image folder, WebDataset shards or parquet files.

    python -m multimodal.data convert data/coco2017 shards/ --to webdataset --shard-size 1000
    python -m multimodal.data convert data/coco2017 data/coco-parquet --to parquet

The output has explicit splits (train/ and validation/; for parquet the Hub's
data/train-00000-of-00004.parquet, data/validation-…), so a held-out validation set stays the
same after conversion; captions go in a `text` column (metadata.jsonl, parquet) or key (each
sample's .json), as lists, exactly as read. It is written into DST.partial and renamed into place: a run cut
short never leaves a half-written DST, and an existing DST is never overwritten.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from PIL import Image

from multimodal.data.caption_dataset import IMAGE_ERRORS
from multimodal.data.layouts import CAPTIONLESS, read_layout, resolve_format
from multimodal.errors import DatasetLayoutError
from multimodal.files import input_overwritten

TARGETS = ("imagefolder", "webdataset", "parquet")
SPLIT_FOLDERS = {"train": "train", "val": "validation"}  # the folders (parquet: file names) written for each split
ROWS_PER_GROUP = 100  # a parquet row group: the images a reader holds at once (what `datasets` writes for images)
Sample = tuple[str, str, bytes, list[str], int]  # (name, extension, image bytes, captions, image id)


def _source_samples(src: str, split: str, data_format: str, caption_column: str, image_column: str,
                    val_fraction: float) -> Iterator[Sample]:
    """Each image of `split` of `src` as a Sample, in order."""
    layout = resolve_format(src, data_format)
    if layout in CAPTIONLESS:
        raise DatasetLayoutError(f"{src} holds images without captions; the layouts convert writes pair each image "
                                 "with its captions (train on the folder as it is)")
    if layout == "webdataset":
        from multimodal.data.webdataset_source import (CAPTION_KEYS, IMAGE_KEYS, WebDatasetSource, captions_of,
                                                       sample_id, scan_shard)

        source = WebDatasetSource(src, split, 8, caption_column, val_fraction, shuffle=False)
        for shard in source.shards:
            for key, files in scan_shard(shard, read=CAPTION_KEYS + IMAGE_KEYS).items():
                captions = captions_of(files, caption_column)
                if source.keep(key, files) and isinstance(captions, list):
                    extension = next(k for k in IMAGE_KEYS if k in files)
                    yield Path(key).name, extension, files[extension], captions, sample_id(key)
        return
    if layout == "parquet":
        yield from _table_samples(src, split, caption_column, image_column, val_fraction)
        return
    found = read_layout(src, layout, caption_column, image_column, val_fraction)
    found.raise_if_fatal()
    records = found.splits[split]
    for path, captions, image_id in zip(records.paths, records.captions, records.image_ids):
        yield Path(path).stem, Path(path).suffix.lstrip(".").lower(), Path(path).read_bytes(), captions, image_id


def _table_samples(src: str, split: str, caption_column: str, image_column: str,
                   val_fraction: float) -> Iterator[Sample]:
    """The rows of parquet/arrow files that training reads (a caption, an image PIL knows), a
    row group at a time; an image is named by its `path`, else by its file and row."""
    from multimodal.data.parquet_source import captions_of, hub_image_column, image_bytes, read_rows, split_groups

    image_column = hub_image_column(image_column)
    for group in split_groups(src, split, image_column, caption_column, val_fraction)[0]:
        for row, image_id, cells in read_rows(group, [image_column, caption_column]):
            try:
                captions = captions_of(cells[caption_column], caption_column)
                data = image_bytes(cells[image_column], group.path.parent)
                with Image.open(io.BytesIO(data)) as image:  # the header alone: its format names the extension
                    extension = {"JPEG": "jpg", "MPO": "jpg"}.get(image.format, str(image.format).lower())
            except IMAGE_ERRORS:
                continue  # `check` lists these rows; training leaves them out too
            cell = cells[image_column]
            path = cell.get("path") if isinstance(cell, dict) else None
            yield Path(path).stem if path else f"{group.path.stem}-{row}", extension, data, captions, image_id


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
    source_folder = Path(src) if Path(src).is_dir() else None  # shards named by a pattern are files
    problem = input_overwritten(target, {"the source": source_folder})
    if problem:  # written inside its source, the set would be read back as part of itself
        raise DatasetLayoutError(problem)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an earlier, interrupted run left
    try:
        counts = {split: _write_split(partial, name, to, shard_size,
                                      _source_samples(src, split, data_format, caption_column, image_column,
                                                      val_fraction))
                  for split, name in SPLIT_FOLDERS.items()}
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # a source that cannot be read leaves nothing behind
        raise
    partial.rename(target)
    return counts


def _write_split(root: Path, name: str, to: str, shard_size: int, samples: Iterator[Sample]) -> int:
    """Write one split's samples as `to` into `root`/`name` (parquet: `root`/data/`name`-…); returns how many."""
    if to == "parquet":
        return _write_parquet(root / "data", name, shard_size, samples)
    folder = root / name
    folder.mkdir(parents=True)
    taken: set[str] = set()
    count = 0
    if to == "imagefolder":
        with open(folder / "metadata.jsonl", "w", encoding="utf-8") as metadata:
            for key, extension, data, captions, _ in samples:
                file_name = f"{_unique(key, taken)}.{extension}"
                (folder / file_name).write_bytes(data)
                metadata.write(json.dumps({"file_name": file_name, "text": captions}) + "\n")
                count += 1
        return count
    import webdataset as wds

    with wds.ShardWriter(str(folder / f"{folder.name}-%06d.tar"), maxcount=shard_size, verbose=0) as writer:
        for key, extension, data, captions, _ in samples:
            # .json, not .txt: a caption may hold a line break (a few COCO captions do).
            writer.write({"__key__": _unique(key, taken), extension: data, "json": {"text": captions}})
            count += 1
    return count


def _hub_schema() -> Any:
    """The columns the `datasets` library writes for an Image feature, a list of texts and an
    integer id, with the features record by which it (and the Hub's viewer) reads them so."""
    import pyarrow as pa

    features = {"image": {"_type": "Image"},
                "text": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
                "image_id": {"dtype": "int64", "_type": "Value"}}
    return pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      ("text", pa.list_(pa.string())), ("image_id", pa.int64())],
                     metadata={"huggingface": json.dumps({"info": {"features": features}})})


def _chunks(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    samples = iter(samples)
    while chunk := list(islice(samples, size)):
        yield chunk


def _write_parquet(folder: Path, name: str, shard_size: int, samples: Iterator[Sample]) -> int:
    """`shard_size` rows a file, in row groups of ROWS_PER_GROUP: one group in memory at a time.
    The files are named as the Hub names them (`name`-00000-of-00003.parquet) once all are written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    schema, samples, paths, count = _hub_schema(), iter(samples), [], 0
    while True:
        writer = None
        try:
            for group in _chunks(islice(samples, shard_size), ROWS_PER_GROUP):
                if writer is None:
                    paths.append(folder / f"{name}-{len(paths):05d}.parquet")
                    writer = pq.ParquetWriter(paths[-1], schema)
                writer.write_table(pa.table({"image": [{"bytes": data, "path": None} for _, _, data, _, _ in group],
                                             "text": [captions for _, _, _, captions, _ in group],
                                             "image_id": [image_id for *_, image_id in group]}, schema=schema),
                                   row_group_size=len(group))
                count += len(group)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            break
    for number, path in enumerate(paths):
        path.rename(folder / f"{name}-{number:05d}-of-{len(paths):05d}.parquet")
    return count
