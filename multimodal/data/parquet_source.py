"""Parquet (or Arrow) files of image–caption rows, the way data sets are stored on the Hugging
Face Hub, streamed with pyarrow: a row group (an Arrow file's record batch) at a time, never
the whole set in memory.

A row holds an image (`image_column`: its encoded bytes, or the struct {bytes, path} that the
`datasets` library writes for an Image feature, whose path is read relative to the file's folder
when the bytes are null) and its captions (`caption_column`: a text or a list of texts); an
`image_id` column, when present, numbers the images as COCO's ids do (an integer in every
row, else the files are refused). The splits are train/ and
validation/ (val/, test/) folders, or files named as the Hub names them (train-00000-of-00004.parquet,
validation-…, or under data/), else `val_fraction` of the rows by a hash of (file, row). Row
groups go to torchrun processes (group i to process i mod N) and then to each process's loader
workers, like WebDataset shards, and their order follows (seed, epoch) alone.
"""

from __future__ import annotations

import io
import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from multimodal.data.caption_dataset import IMAGE_ERRORS, none_readable, why_unreadable
from multimodal.data.layouts import VAL_FOLDERS, is_held_out
from multimodal.data.listing import listed_file
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
        raise DatasetLayoutError(f"{path} is not a readable {path.suffix[1:]} file ({_one_line(error)})") from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())  # pyarrow's messages run over several lines


@contextmanager
def _damage_named(where: str) -> Iterator[None]:
    """pyarrow's errors on damaged data, met after the file opened, as one line naming `where`."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError) as error:
        raise DatasetLayoutError(f"{where} cannot be read ({_one_line(error)})") from None


class _ParquetTable:
    def __init__(self, file: Any) -> None:
        self.file, self.schema, self.num_groups = file, file.schema_arrow, file.num_row_groups

    def rows(self, group: int) -> int:
        return self.file.metadata.row_group(group).num_rows

    def group(self, group: int, columns: list[str]) -> Any:
        return self.file.read_row_group(group, columns=columns)

    def nulls(self, column: str) -> int:
        return self.file.read(columns=[column]).column(0).null_count


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

    def nulls(self, column: str) -> int:
        return sum(self._batch(i).column(column).null_count for i in range(self.num_groups))


def hub_image_column(image_column: str) -> str:
    """--image-column for parquet files: its default (an image folder's `file_name`) means the
    Hub's `image`."""
    return "image" if image_column == "file_name" else image_column


def _values(kind: Any) -> str:
    import pyarrow as pa

    if pa.types.is_null(kind):
        return "only nulls"
    if pa.types.is_floating(kind):
        return "floats"
    return "text" if pa.types.is_string(kind) or pa.types.is_large_string(kind) else f"{kind} values"


def _check_columns(path: Path, reader: Any, image_column: str, caption_column: str) -> None:
    """One line naming `path` and the column when a column is missing, or when `image_id` (which
    numbers the images evaluation scores and the captions drawn each epoch) is not an integer in
    every row: refused, not replaced by hashed ids, so that ids the set gives are never silently lost."""
    import pyarrow as pa

    names = reader.schema.names
    missing = [c for c in (image_column, caption_column) if c not in names]
    if missing:
        raise DatasetLayoutError(
            f"{path} has no column {missing[0]!r}; its columns are {', '.join(names)} "
            f"(choose with --{'image' if missing[0] == image_column else 'caption'}-column)")
    if ID_COLUMN not in names:
        return
    kind = reader.schema.field(ID_COLUMN).type
    with _damage_named(f"{path}: column {ID_COLUMN!r}"):
        nulls = reader.nulls(ID_COLUMN) if pa.types.is_integer(kind) else 0
    if not pa.types.is_integer(kind) or nulls:
        holds = f"{nulls} null{'s' * (nulls > 1)}" if nulls else _values(kind)
        raise DatasetLayoutError(
            f"{path}: column {ID_COLUMN!r} holds {holds}, not an integer in every row; write integer ids, or "
            "drop or rename the column to number the rows by file and row instead")


@dataclass(frozen=True)
class RowGroup:
    """One row group (an Arrow file's record batch) and which of its rows belong to a split."""

    path: Path
    index: int
    first: int  # its first row's index in the file
    rows: Sequence[int]  # indices within the group: all of them (a range), or a split held out by hash


def split_groups(data_dir: str | Path, split: str, image_column: str = "image", caption_column: str = "text",
                 val_fraction: float = 0.05) -> tuple[list[RowGroup], bool]:
    """The row groups of `split` ("train" or "val"), each with its rows of the split, and whether
    val is held out of train by a hash of (file, row). Every file's columns are checked here, so
    a wrong one is one line naming the file before any row is read."""
    train, val = table_files(data_dir)
    held_out = val is None
    groups = []
    for path in train if split == "train" or held_out else val:
        reader = _open(path)
        _check_columns(path, reader, image_column, caption_column)
        first = 0
        for index in range(reader.num_groups):
            count = reader.rows(index)
            rows: Sequence[int] = range(count)
            if held_out:
                rows = [i for i in rows if is_held_out(f"{path.name}/{first + i}", val_fraction) == (split != "train")]
            groups.append(RowGroup(path, index, first, rows))
            first += count
    return groups, held_out


def read_rows(group: RowGroup, columns: list[str], order: list[int] | None = None) -> Iterator[tuple[int, int, dict]]:
    """(row in its file, image id, {column: value}) for the group's rows of its split, in `order`
    (else the file's): the group's `columns` are read once, one row group in memory at a time."""
    rows = group.rows if order is None else order
    if not rows:
        return
    reader = _open(group.path)
    has_ids = ID_COLUMN in reader.schema.names
    with _damage_named(f"{group.path}: row group {group.index}"):
        table = reader.group(group.index, [*columns, ID_COLUMN] if has_ids else columns)
    cells = {column: table.column(column) for column in columns}
    ids = table.column(ID_COLUMN) if has_ids else None
    for i in rows:
        row = group.first + i
        image_id = ids[i].as_py() if ids is not None else sample_id(f"{group.path.name}/{row}")
        yield row, image_id, {column: values[i].as_py() for column, values in cells.items()}


def captions_of(cell: Any, column: str) -> list[str]:
    """A caption cell's captions (a text or a list of texts); a ValueError when it holds none."""
    cells = cell if isinstance(cell, list) else [cell]
    captions = [c.strip() for c in cells if isinstance(c, str) and c.strip()]
    if not captions:
        raise ValueError(f"no caption in column {column!r}")
    return captions


def image_bytes(cell: Any, folder: Path) -> bytes:
    """The encoded image of an image cell: bytes, or {bytes, path} as `datasets` writes it (a
    path relative to `folder`, the file's); a ValueError (OSError) says why there is none."""
    if isinstance(cell, (bytes, bytearray)) and cell:
        return bytes(cell)
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return cell["bytes"]
        if isinstance(cell.get("path"), str):
            path = listed_file(folder, cell["path"])
            if isinstance(path, str):
                raise ValueError(f"image path {cell['path']!r} {path}")
            return path.read_bytes()
        raise ValueError("the image cell holds neither bytes nor a path")
    if cell is None or cell == b"":
        raise ValueError("the image cell is empty")
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
        self.groups, self.hold_out = split_groups(data_dir, split, image_column, caption_column, val_fraction)
        self.by_rank = split == "train"  # validation runs on one process and reads every group
        distributed = self.by_rank and torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank, self.world_size = (
            (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1))
        if len(self.groups) < self.world_size:
            raise DatasetLayoutError(f"{len(self.groups)} row groups for {self.world_size} processes: every process "
                                     "needs at least one (write smaller row groups)")
        counts = [len(group.rows) for group in self.groups]
        self.share = min(sum(counts[r :: self.world_size]) for r in range(self.world_size))
        self.length = self.share * self.world_size
        if self.length == 0:
            raise DatasetLayoutError(f"no {split} row in the parquet/arrow files of {data_dir}")
        self.references = self._references() if split != "train" else {}
        self.image_info: dict[int, dict] = {}
        self.num_skipped = 0  # unreadable images and rows without captions, in this process
        self._refuse_if_unreadable()

    def _refuse_if_unreadable(self) -> None:
        """Decode the split's rows in order until one can be used (the first, for a sound set), so
        that files none of whose rows can be read are refused here, in one line, and not met as
        an epoch without a step."""
        first, tried = None, 0
        for group in self.groups:
            for row, _, cells in read_rows(group, [self.image_column, self.caption_column]):
                tried += 1
                try:
                    self._pixels(cells, group.path)
                    return
                except IMAGE_ERRORS as error:
                    first = first or f"{group.path}: row {row}: {why_unreadable(error)}"
        raise DatasetLayoutError(none_readable(tried, f"the {self.split} split of {self.data_dir}", first, what="rows"))

    def _references(self) -> dict[int, list[str]]:
        """Every image id of the split → all its captions: what evaluation scores against."""
        references = {}
        for group in self.groups:
            for _, image_id, cells in read_rows(group, [self.caption_column]):
                try:
                    references[image_id] = captions_of(cells[self.caption_column], self.caption_column)
                except ValueError:
                    continue  # a row without caption is left out of training too
        return references

    def set_epoch(self, epoch: int) -> None:
        """Choose this epoch's group order, shuffle and captions."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _my_groups(self) -> list[RowGroup]:
        groups = self.groups[self.rank :: self.world_size]
        if self.shuffle:
            random.Random(f"{self.seed}/{self.epoch}").shuffle(groups)  # the same in every worker
        worker = torch.utils.data.get_worker_info()
        return groups[worker.id :: worker.num_workers] if worker else groups

    def __iter__(self) -> Iterator[dict]:
        for group in self._my_groups():
            order = list(group.rows)
            if self.shuffle:
                random.Random(f"{self.seed}/{self.epoch}/{group.path.name}/{group.index}").shuffle(order)
            for row, image_id, cells in read_rows(group, [self.image_column, self.caption_column], order):
                sample = self._decode(cells, image_id, group.path, row)
                if sample is not None:
                    yield sample

    def _pixels(self, cells: dict, path: Path) -> tuple[torch.Tensor, list[str]]:
        """A row's image (uint8, resized and cropped) and captions; an IMAGE_ERRORS one says why not."""
        captions = captions_of(cells[self.caption_column], self.caption_column)
        image = load_rgb(io.BytesIO(image_bytes(cells[self.image_column], path.parent)))
        return to_uint8_tensor(self.resize_and_crop(image)), captions

    def _decode(self, cells: dict, image_id: int, path: Path, row: int) -> dict | None:
        try:
            pixels, captions = self._pixels(cells, path)
        except IMAGE_ERRORS as error:
            if not self.num_skipped:
                warnings.warn(f"skipping row {row} of {path} ({why_unreadable(error)}); further ones are counted",
                              stacklevel=1)
            self.num_skipped += 1
            return None
        rng = np.random.default_rng([self.seed, self.epoch, image_id])
        return {"image": from_uint8(pixels), "caption": captions[int(rng.integers(len(captions)))], "image_id": image_id}
