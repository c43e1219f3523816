"""The dataset layouts `--data-dir` may hold: which one a folder is, and a reader for each.

    coco          annotations/captions_{train,val}2017.json + {train,val}2017/*.jpg
    imagefolder   metadata.jsonl or metadata.csv (a file_name and a caption column) beside the
                  images; or train/ and validation/ (val/, test/) folders, each with its own
    paired        NAME.jpg (png, webp, …) beside NAME.txt, one caption per line
    captions-txt  images/1.jpg … images/N.jpg and captions.txt, whose line i describes image i
    webdataset    .tar shards (multimodal/data/webdataset_source.py streams them)
    parquet       .parquet or .arrow files of image and caption columns, as the Hub stores data
                  sets (multimodal/data/parquet_source.py streams them)
    karpathy      dataset_coco.json (Karpathy's split: train + restval, val, test) beside COCO's
                  image folders (multimodal/data/karpathy.py)
    images-only   images and no caption file of any kind (or train/ and val/ folders of them):
                  each image has the empty caption, and a run on them is unconditional

Every reader gives the same thing, `CaptionRecords` for a train and a val split, and lists
what is wrong as `Problem`s with their file and line: fatal ones (the set would not train as
meant: a line that is not JSON, a missing column, an empty caption) stop training with one
line; the others (a missing image, an image without caption, a duplicate) are left out and
counted. Where a layout has no validation split, `val_fraction` of the images is held out by
a hash of the file name, so the same files every run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from multimodal.config import DATA_FORMATS
from multimodal.data.caption_dataset import CaptionRecords
from multimodal.data.coco import read_coco
from multimodal.data.karpathy import KARPATHY_FILE, read_karpathy
from multimodal.data.listing import UnreadableText, listed_file, read_text
from multimodal.errors import DatasetLayoutError
from multimodal.paths import is_shard_spec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VAL_FOLDERS = ("validation", "val", "test")  # the first one present is the validation split
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
# The layouts whose images have no captions: each has the one caption NO_CAPTION, and training on
# them makes an unconditional model (multimodal/training/trainer.py).
CAPTIONLESS = ("images-only",)
NO_CAPTION = ""
# Files that may hold captions: a folder with any of them is detected as images-only never, so that
# captions laid out in no layout this reads are named as such, not silently trained without.
CAPTION_SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".tsv", ".parquet", ".arrow", ".tar", ".yaml", ".yml",
                    ".xml", ".caption", ".cap")
EXPECTED = (
    "expected one of: COCO (annotations/captions_train2017.json and train2017/), an image folder with "
    "metadata.jsonl or metadata.csv, paired NAME.jpg + NAME.txt files, images/1.jpg… with captions.txt, "
    "WebDataset .tar shards, or .parquet / .arrow files (no data at hand? train on the built-in set with --preset shapes)"
)


@dataclass
class Problem:
    """One thing wrong with a data set, where it is (`file` or `file:line`) and whether it stops training."""

    where: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Layout:
    """What a reader found: the layout's name, its splits and its problems."""

    name: str
    root: Path
    splits: dict[str, CaptionRecords] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    num_missing: dict[str, int] = field(default_factory=dict)  # per split: listed images not on disk
    held_out: bool = False  # val was held out of the training images by `val_fraction`

    def raise_if_fatal(self) -> None:
        """The first fatal problem as a DatasetLayoutError (one line), if any."""
        fatal = [p for p in self.problems if p.fatal]
        if fatal:
            more = f" (and {len(fatal) - 1} more; `python -m multimodal.data check {self.root}` lists them)"
            raise DatasetLayoutError(f"{fatal[0]}{more if len(fatal) > 1 else ''}")


# -- which layout -------------------------------------------------------------------------
def detect_layout(data_dir: str | os.PathLike) -> str:
    """The layout `data_dir` holds, by its files; a DatasetLayoutError when none fits."""
    if is_shard_spec(data_dir):
        return "webdataset"
    root = Path(data_dir)
    if (root / KARPATHY_FILE).is_file() and not (root / "annotations").exists():
        return "karpathy"  # beside COCO's annotations it is only read when asked for (--data-format karpathy)
    if not root.is_dir() or any((root / name).exists() for name in ("annotations", "train2017", "val2017")):
        return "coco"  # its reader names what is missing (and suggests the shapes preset)
    for folder in (root, root / "train"):
        if any((folder / name).is_file() for name in METADATA_FILES):
            return "imagefolder"
    if (root / "captions.txt").is_file() and (root / "images").is_dir():
        return "captions-txt"
    if any(p.name.endswith((".parquet", ".arrow")) for folder in (root, root / "data", root / "train")
           if folder.is_dir() for p in folder.iterdir()):
        return "parquet"
    for folder in (root, root / "train"):
        if folder.is_dir() and any(_is_image(p) and p.with_suffix(".txt").is_file() for p in folder.iterdir()):
            return "paired"
    files = [Path(current, name) for current, _, names in os.walk(root) for name in names]
    images = sum(path.suffix.lower() in IMAGE_SUFFIXES for path in files)
    captions = next((path for path in files if path.suffix.lower() in CAPTION_SUFFIXES), None)
    if images and captions is None:
        return "images-only"
    if images:
        raise DatasetLayoutError(f"{root} holds images and {captions.relative_to(root)}, but in no dataset layout "
                                 f"this reads; {EXPECTED} (to train on the images alone, without captions: "
                                 "--data-format images-only)")
    empty = "is empty" if not files else "holds no dataset layout this reads"
    raise DatasetLayoutError(f"{root} {empty}; {EXPECTED}")


def resolve_format(data_dir: str | os.PathLike, data_format: str) -> str:
    """`data_format`, or the detected layout when it is auto."""
    if data_format not in DATA_FORMATS:
        raise DatasetLayoutError(f"unknown data format {data_format!r}; choose from {', '.join(DATA_FORMATS)}")
    return detect_layout(data_dir) if data_format == "auto" else data_format


# -- the validation hold-out --------------------------------------------------------------
def hash_fraction(name: str) -> float:
    """A number in [0, 1) fixed by `name` alone (not by Python's per-run hash seed)."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") / 2**64


def is_held_out(name: str, val_fraction: float) -> bool:
    """Whether the image (or sample key) `name` belongs to the held-out validation split."""
    return hash_fraction(name) < val_fraction


def hold_out(records: CaptionRecords, root: Path, val_fraction: float) -> tuple[CaptionRecords, CaptionRecords]:
    """(train, val): the images whose file name (relative to `root`) hashes below `val_fraction`
    are val; at least one when there are two or more images."""
    names = [Path(path).relative_to(root).as_posix() for path in records.paths]
    chosen = {i for i, name in enumerate(names) if is_held_out(name, val_fraction)}
    if not chosen and len(names) > 1:
        chosen = {min(range(len(names)), key=lambda i: hash_fraction(names[i]))}
    train, val = CaptionRecords(), CaptionRecords()
    for i, (path, captions) in enumerate(zip(records.paths, records.captions)):
        (val if i in chosen else train).add(path, captions)
    return train, val


# -- readers --------------------------------------------------------------------------------
def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _images_under(folder: Path, skip: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Image files under `folder`, in sorted order, leaving out the `skip` folders."""
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if Path(current, name) not in skip)
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(current, name)


def _split_folders(root: Path, has_data: Callable[[Path], bool]) -> tuple[Path, Path | None]:
    """(train folder, val folder or None): train/ and the first of VAL_FOLDERS when they hold
    data (by `has_data`), else the root alone."""
    if has_data(root / "train"):
        val = next((root / name for name in VAL_FOLDERS if has_data(root / name)), None)
        return root / "train", val
    return root, None


Reader = Callable[[Path], tuple[CaptionRecords, int]]  # a folder → its records and how many images are missing


def _add_split(layout: Layout, root: Path, train_dir: Path, val_dir: Path | None, read: Reader,
               val_fraction: float) -> None:
    """Read train (and val) with `read(folder) -> (records, num_missing)`; hold val out of train
    when there is no val folder."""
    train, layout.num_missing["train"] = read(train_dir)
    if val_dir is None:
        layout.held_out = True
        layout.splits["train"], layout.splits["val"] = hold_out(train, root, val_fraction)
    else:
        layout.splits["train"] = train
        layout.splits["val"], layout.num_missing["val"] = read(val_dir)
    what = "image" if layout.name in CAPTIONLESS else "captioned image"
    for split, records in layout.splits.items():
        if not records.paths and not any(p.fatal for p in layout.problems):
            folder = val_dir if split == "val" and val_dir else train_dir
            layout.problems.append(Problem(str(folder), f"no {what} for the {split} split"))


def _caption_list(cell: Any, csv_cell: bool) -> list[str] | str:
    """A caption cell as its captions, or what is wrong with it."""
    if csv_cell and isinstance(cell, str) and cell.lstrip().startswith("["):
        try:
            cell = json.loads(cell)
        except ValueError:
            pass  # a caption that starts with a bracket
    cells = cell if isinstance(cell, list) else [cell]
    if not cells or not all(isinstance(c, str) for c in cells):
        return f"a caption must be text or a list of texts, got {json.dumps(cell)[:60]}"
    captions = [c.strip() for c in cells]
    return captions if all(captions) else "empty caption"


def _metadata_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[str, dict]]:
    """(file:line, row) for each row of metadata.jsonl or metadata.csv; bad lines become problems."""
    try:
        text = read_text(path)
    except UnreadableText as error:
        problems.append(Problem(error.where, error.problem))
        return
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                yield f"{path}:{reader.line_num}", {k: v for k, v in row.items() if k is not None}
        except csv.Error as error:
            problems.append(Problem(f"{path}:{reader.line_num}", f"not valid CSV ({error})"))
        return
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON text may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(Problem(f"{path}:{number}", f"not a JSON line ({error.msg}): {line.strip()[:60]}"))
            continue
        except RecursionError:
            problems.append(Problem(f"{path}:{number}", "not a JSON line (nested too deeply)"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(f"{path}:{number}", f"not a JSON object: {line.strip()[:60]}"))
            continue
        yield f"{path}:{number}", row


def read_imagefolder_split(folder: Path, caption_column: str, image_column: str, problems: list[Problem],
                           skip: tuple[Path, ...] = ()) -> tuple[CaptionRecords, int]:
    """One folder with metadata.jsonl (or .csv): its rows merged per image, in file order."""
    metadata = next(folder / name for name in METADATA_FILES if (folder / name).is_file())
    captions: dict[str, list[str]] = {}
    missing_column = False
    for where, row in _metadata_rows(metadata, problems):
        absent = [column for column in (image_column, caption_column) if column not in row]
        if absent:
            if not missing_column:  # once a file: every row lacks it
                flag = "--image-column" if absent[0] == image_column else "--caption-column"
                problems.append(Problem(where, f"no column {absent[0]!r}; the columns are "
                                        f"{', '.join(map(repr, row))} (choose another with {flag})"))
            missing_column = True
            continue
        name = row[image_column]
        if not isinstance(name, str) or not name.strip():
            problems.append(Problem(where, f"{image_column!r} must name an image file, got {json.dumps(name)[:60]}"))
            continue
        path = listed_file(folder, name.strip())
        if isinstance(path, str):
            problems.append(Problem(where, f"{image_column!r} {json.dumps(name)[:200]} {path}"))
            continue
        name = path.relative_to(folder).as_posix()
        found = _caption_list(row[caption_column], metadata.suffix == ".csv")
        if isinstance(found, str):
            problems.append(Problem(where, f"{found} in column {caption_column!r} for {name}"))
            continue
        known = captions.setdefault(name, [])
        for caption in found:
            if caption in known:
                problems.append(Problem(where, f"duplicate caption for {name}: {caption[:60]!r}", fatal=False))
            else:
                known.append(caption)
    records, num_missing = CaptionRecords(), 0
    for name, caps in captions.items():
        path = folder / name
        if not path.is_file():
            num_missing += 1
            problems.append(Problem(str(metadata), f"image {name} not found in {folder}", fatal=False))
            continue
        records.add(str(path), caps)
    listed = {Path(p) for p in records.paths} | {folder / n for n in captions}
    for path in _images_under(folder, skip):
        if path not in listed:
            problems.append(Problem(str(path), f"image without caption (not in {metadata.name})", fatal=False))
    return records, num_missing


def read_paired_split(folder: Path, problems: list[Problem], skip: tuple[Path, ...] = ()) -> tuple[CaptionRecords, int]:
    """Each image with the NAME.txt beside it (one caption per line, blank lines ignored)."""
    records = CaptionRecords()
    images = list(_images_under(folder, skip))
    for path in images:
        text_file = path.with_suffix(".txt")
        if not text_file.is_file():
            problems.append(Problem(str(path), f"image without caption (no {text_file.name})", fatal=False))
            continue
        captions: list[str] = []
        try:
            lines = read_text(text_file).splitlines()
        except UnreadableText as error:
            problems.append(Problem(error.where, error.problem))
            continue
        for line in lines:
            caption = line.strip()
            if caption in captions:
                problems.append(Problem(str(text_file), f"duplicate caption {caption[:60]!r}", fatal=False))
            elif caption:
                captions.append(caption)
        if not captions:
            problems.append(Problem(str(text_file), "empty caption file"))
            continue
        records.add(str(path), captions)
    stems = {p.with_suffix("") for p in images}
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if Path(current, name) not in skip)
        for name in sorted(files):
            if name.endswith(".txt") and Path(current, name).with_suffix("") not in stems:
                problems.append(Problem(str(Path(current, name)), "caption file without an image", fatal=False))
    return records, 0


def read_captions_txt(root: Path, problems: list[Problem]) -> tuple[CaptionRecords, int]:
    """images/I.jpg with line I of captions.txt (numbered from 1, or from 0 when images/0.* exists)."""
    numbered: dict[int, Path] = {}
    for path in _images_under(root / "images"):
        if path.stem.isdigit() and path.parent == root / "images":
            numbered[int(path.stem)] = path
        else:
            problems.append(Problem(str(path), "not numbered like images/1.jpg; ignored", fatal=False))
    first = 0 if 0 in numbered else 1
    captions_file = root / "captions.txt"
    try:
        lines = read_text(captions_file).splitlines()
    except UnreadableText as error:
        problems.append(Problem(error.where, error.problem))
        lines = []
    records, num_missing = CaptionRecords(), 0
    for number, line in enumerate(lines, 1):
        index = number - 1 + first
        if not line.strip():
            problems.append(Problem(f"{captions_file}:{number}", f"empty caption (for image {index})"))
        elif index not in numbered:
            num_missing += 1
            problems.append(Problem(f"{captions_file}:{number}", f"no image images/{index}.* for this caption",
                                    fatal=False))
        else:
            records.add(str(numbered[index]), [line.strip()])
    for index in sorted(set(numbered) - set(range(first, first + len(lines)))):
        problems.append(Problem(str(numbered[index]), f"image without caption ({captions_file.name} has "
                                f"{len(lines)} lines)", fatal=False))
    return records, num_missing


def read_images_split(folder: Path, skip: tuple[Path, ...] = ()) -> tuple[CaptionRecords, int]:
    """Every image under `folder` (leaving out the `skip` folders), each with the one caption
    NO_CAPTION: the images-only layout, whose caption files, if any, are not read."""
    records = CaptionRecords()
    for path in _images_under(folder, skip):
        records.add(str(path), [NO_CAPTION])
    return records, 0


def read_layout(data_dir: str | os.PathLike, data_format: str = "auto", caption_column: str = "text",
                image_column: str = "file_name", val_fraction: float = 0.05) -> Layout:
    """The train and val records of a folder in any layout but the streamed ones (webdataset,
    parquet), with its problems. A DatasetLayoutError when the folder is not in the layout at all."""
    root = Path(data_dir)
    name = resolve_format(root, data_format)
    if name in ("webdataset", "parquet"):
        what = "WebDataset shards" if name == "webdataset" else "parquet/arrow files"
        raise DatasetLayoutError(f"{root} holds {what}: they are streamed, not read into records")
    if name != "coco" and not root.is_dir():
        raise DatasetLayoutError(f"dataset folder {root} not found")
    layout = Layout(name, root)
    problems = layout.problems
    if name == "coco":
        for split in ("train", "val"):
            layout.splits[split], layout.num_missing[split] = read_coco(root, split)
            if layout.num_missing[split]:
                problems.append(Problem(str(root / "annotations" / f"captions_{split}2017.json"),
                                        f"{layout.num_missing[split]} listed images are missing", fatal=False))
    elif name == "karpathy":
        layout.splits, layout.num_missing = read_karpathy(root)
        for split, missing in layout.num_missing.items():
            if missing:
                problems.append(Problem(str(root / KARPATHY_FILE), f"{missing} listed {split} images are missing",
                                        fatal=False))
    elif name == "imagefolder":
        def has_metadata(folder: Path) -> bool:
            return any((folder / file).is_file() for file in METADATA_FILES)

        if not has_metadata(root) and not has_metadata(root / "train"):
            raise DatasetLayoutError(f"{root}: no {' or '.join(METADATA_FILES)} in it or in {root / 'train'}")
        train_dir, val_dir = _split_folders(root, has_metadata)
        skip = tuple(root / n for n in ("train", *VAL_FOLDERS)) if train_dir == root else ()
        _add_split(layout, root, train_dir, val_dir,
                   lambda folder: read_imagefolder_split(folder, caption_column, image_column, problems,
                                                         skip if folder == root else ()),
                   val_fraction)
    elif name == "paired":
        def has_pairs(folder: Path) -> bool:
            return folder.is_dir() and any(_is_image(p) and p.with_suffix(".txt").is_file() for p in folder.iterdir())

        train_dir, val_dir = _split_folders(root, has_pairs)
        _add_split(layout, root, train_dir, val_dir, lambda folder: read_paired_split(folder, problems), val_fraction)
    elif name == "images-only":
        def has_images(folder: Path) -> bool:
            return folder.is_dir() and next(_images_under(folder), None) is not None

        train_dir, val_dir = _split_folders(root, has_images)
        _add_split(layout, root, train_dir, val_dir, read_images_split, val_fraction)
    else:  # captions-txt
        for needed in (root / "captions.txt", root / "images"):
            if not needed.exists():
                raise DatasetLayoutError(f"{needed} not found; the captions-txt layout is images/1.jpg… with "
                                         "captions.txt, whose line i describes image i")
        _add_split(layout, root, root, None, lambda folder: read_captions_txt(folder, problems), val_fraction)
    return layout
