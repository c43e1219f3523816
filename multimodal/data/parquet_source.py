"""Parquet (or Arrow) files of image–caption rows, the way data sets are stored on the Hugging
Face Hub, streamed with pyarrow: a row group (an Arrow file's record batch) at a time, never
the whole set in memory.

A row holds an image (`image_column`: its encoded bytes, or the struct {bytes, path} that the
`datasets` library writes for an Image feature, whose path is read relative to the file's folder
when the bytes are null) and its captions (`caption_column`: a text or a list of texts); an
`image_id` column, when present, numbers the images as COCO's ids do. The splits are train/ and
validation/ (val/, test/) folders, or files named as the Hub names them (train-00000-of-00004.parquet,
validation-…, or under data/), else `val_fraction` of the rows by a hash of (file, row). Row
groups go to torchrun processes (group i to process i mod N) and then to each process's loader
workers, like WebDataset shards, and their order follows (seed, epoch) alone.
"""

from __future__ import annotations

import io
import random
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from multimodal.data.caption_dataset import IMAGE_ERRORS
from multimodal.data.layouts import VAL_FOLDERS, is_held_out
from multimodal.data.transforms import from_uint8, load_rgb, resize_and_crop, to_uint8_tensor
from multimodal.data.webdataset_source import sample_id
from multimodal.errors import DatasetLayoutError

TABLE_SUFFIXES = (".parquet", ".arrow")
ID_COLUMN = "image_id"


def table_files(data_dir: str | Path) -> tuple[list[Path], list[Path] | None]:
    """(train files, val files or None when the folder holds no validation split)."""
    root = Path(data_dir)
    if (root / "data").is_dir() and not _tables(root):
        root = root / "data"  # the Hub's layout: data/train-00000-of-00001.parquet
    if _tables(root / "train"):
        val = next((_tables(root / name) for name in VAL_FOLDERS if _tables(root / name)), None)
        return _tables(root / "train"), val
    files = _tables(root)
    named = {split: [f for f in files if f.name.startswith(f"{split}-")] for split in ("train", *VAL_FOLDERS)}
    if named["train"]:
        return named["train"], next((named[name] for name in VAL_FOLDERS if named[name]), None)
    if not files:
        raise DatasetLayoutError(f"no .parquet or .arrow file in {data_dir}")
    return files, None


def _tables(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(TABLE_SUFFIXES)) if folder.is_dir() else []


def _open(path: Path) -> Any:
    """A pyarrow reader of `path` with `.schema`, `.num_groups` and `.group(i, columns)`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            return _ParquetTable(pq.ParquetFile(path))
        try:
            return _ArrowTable(pa.ipc.open_file(pa.memory_map(str(path))))
        except pa.ArrowInvalid:  # the `datasets` cache writes Arrow streams, not files
            return _ArrowTable(pa.ipc.open_stream(pa.memory_map(str(path))))
    except (pa.ArrowException, OSError) as error:
        raise DatasetLayoutError(f"{path} is not a readable {path.suffix[1:]} file ({error})") from None


class _ParquetTable:
    def __init__(self, file: Any) -> None:
        self.file, self.schema, self.num_groups = file, file.schema_arrow, file.num_row_groups

    def rows(self, group: int) -> int:
        return self.file.metadata.row_group(group).num_rows

    def group(self, group: int, columns: list[str]) -> Any:
        return self.file.read_row_group(group, columns=columns)


class _ArrowTable:
    def __init__(self, reader: Any) -> None:
        self.batches = list(reader) if not hasattr(reader, "get_batch") else None
        self.reader, self.schema = reader, reader.schema
        self.num_groups = len(self.batches) if self.batches is not None else reader.num_record_batches

    def _batch(self, group: int) -> Any:
        return self.batches[group] if self.batches is not None else self.reader.get_batch(group)

    def rows(self, group: int) -> int:
        return self._batch(group).num_rows

    def group(self, group: int, columns: list[str]) -> Any:
        return self._batch(group).select(columns)


def captions_of(cell: Any) -> list[str] | None:
    """A caption cell's captions (a text or a list of texts), or None when it holds none."""
    cells = cell if isinstance(cell, list) else [cell]
    captions = [c.strip() for c in cells if isinstance(c, str) and c.strip()]
    return captions or None


def image_bytes(cell: Any, folder: Path) -> bytes:
    """The encoded image of an image cell: bytes, or {bytes, path} as `datasets` writes it."""
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return cell["bytes"]
        if isinstance(cell.get("path"), str):
            path = Path(cell["path"])
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"image path {cell['path']!r} leaves the data folder")
            return (folder / path).read_bytes()
    raise ValueError(f"an image cell must hold bytes or {{bytes, path}}, not {type(cell).__name__}")


class ParquetSource(torch.utils.data.IterableDataset):
    """The rows of one split of parquet/arrow files, streamed; `len()` is the number of rows an
    epoch trains on (every process sees as many: the smallest share, × processes)."""

    def __init__(self, data_dir: str, split: str = "train", image_size: int = 224, caption_column: str = "text",
                 image_column: str = "image", val_fraction: float = 0.05, seed: int = 0,
                 shuffle: bool | None = None) -> None:
        self.data_dir, self.split = data_dir, split
        self.caption_column, self.image_column = caption_column, image_column
        self.val_fraction, self.seed, self.epoch = val_fraction, seed, 0
        self.shuffle = split == "train" if shuffle is None else shuffle
        self.resize_and_crop = resize_and_crop(image_size)
        train, val = table_files(data_dir)
        self.hold_out = val is None
        files = train if split == "train" or val is None else val
        self.groups: list[tuple[Path, int, int]] = []  # (file, row group, its first row's index in the file)
        for path in files:
            table = _open(path)
            missing = [c for c in (image_column, caption_column) if c not in table.schema.names]
            if missing:
                raise DatasetLayoutError(
                    f"{path} has no column {missing[0]!r}; its columns are {', '.join(table.schema.names)} "
                    f"(choose with --{'image' if missing[0] == image_column else 'caption'}-column)")
            first = 0
            for group in range(table.num_groups):
                self.groups.append((path, group, first))
                first += table.rows(group)
        self.by_rank = split == "train"  # validation runs on one process and reads every group
        distributed = self.by_rank and torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank, self.world_size = (
            (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1))
        if len(self.groups) < self.world_size:
            raise DatasetLayoutError(f"{len(self.groups)} row groups for {self.world_size} processes: every process "
                                     "needs at least one (write smaller row groups)")
        counts = [len(self._rows_kept(path, group, first)) for path, group, first in self.groups]
        self.share = min(sum(counts[r :: self.world_size]) for r in range(self.world_size))
        self.length = self.share * self.world_size
        if self.length == 0:
            raise DatasetLayoutError(f"no {split} row in the parquet/arrow files of {data_dir}")
        self.references = self._references() if split != "train" else {}
        self.image_info: dict[int, dict] = {}
        self.num_skipped = 0  # unreadable images and rows without captions, in this process

    def _rows_kept(self, path: Path, group: int, first: int) -> list[int]:
        """The rows of a group that belong to this split (all of them unless held out by hash)."""
        count = _open(path).rows(group)
        if not self.hold_out:
            return list(range(count))
        return [i for i in range(count) if is_held_out(f"{path.name}/{first + i}", self.val_fraction) ==
                (self.split != "train")]

    def _ids(self, table: Any, path: Path, first: int) -> list[int]:
        if ID_COLUMN in table.column_names:
            return [int(i) for i in table.column(ID_COLUMN).to_pylist()]
        return [sample_id(f"{path.name}/{first + i}") for i in range(table.num_rows)]

    def _references(self) -> dict[int, list[str]]:
        """Every image id of the split → all its captions: what evaluation scores against."""
        references = {}
        for path, group, first in self.groups:
            reader = _open(path)
            columns = [self.caption_column] + ([ID_COLUMN] if ID_COLUMN in reader.schema.names else [])
            table = reader.group(group, columns)
            ids, cells = self._ids(table, path, first), table.column(self.caption_column).to_pylist()
            for i in self._rows_kept(path, group, first):
                captions = captions_of(cells[i])
                if captions:
                    references[ids[i]] = captions
        return references

    def set_epoch(self, epoch: int) -> None:
        """Choose this epoch's group order, shuffle and captions."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _my_groups(self) -> list[tuple[Path, int, int]]:
        groups = self.groups[self.rank :: self.world_size]
        if self.shuffle:
            random.Random(f"{self.seed}/{self.epoch}").shuffle(groups)  # the same in every worker
        worker = torch.utils.data.get_worker_info()
        return groups[worker.id :: worker.num_workers] if worker else groups

    def __iter__(self) -> Iterator[dict]:
        for path, group, first in self._my_groups():
            reader = _open(path)
            columns = [self.image_column, self.caption_column]
            columns += [ID_COLUMN] if ID_COLUMN in reader.schema.names else []
            table = reader.group(group, columns)
            ids = self._ids(table, path, first)
            images, cells = table.column(self.image_column), table.column(self.caption_column)
            rows = self._rows_kept(path, group, first)
            if self.shuffle:
                random.Random(f"{self.seed}/{self.epoch}/{path.name}/{group}").shuffle(rows)
            for i in rows:
                sample = self._decode(images[i].as_py(), cells[i].as_py(), ids[i], path, first + i)
                if sample is not None:
                    yield sample

    def _decode(self, image: Any, cell: Any, image_id: int, path: Path, row: int) -> dict | None:
        captions = captions_of(cell)
        try:
            if captions is None:
                raise ValueError(f"no caption in column {self.caption_column!r}")
            pixels = to_uint8_tensor(self.resize_and_crop(load_rgb(io.BytesIO(image_bytes(image, path.parent)))))
        except IMAGE_ERRORS as error:
            if not self.num_skipped:
                warnings.warn(f"skipping row {row} of {path} ({error}); further ones are counted", stacklevel=1)
            self.num_skipped += 1
            return None
        rng = np.random.default_rng([self.seed, self.epoch, image_id])
        return {"image": from_uint8(pixels), "caption": captions[int(rng.integers(len(captions)))], "image_id": image_id}
