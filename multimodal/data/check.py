"""`python -m multimodal.data check DIR`: what a data set holds and everything wrong with it.

The same readers as training, so the same fast checks (the layout, every metadata line, every
caption), plus the slow ones training leaves to the moment it reads a file: every image is
opened. Fatal problems (exit 2) are those that stop training; the others are left out of it.
"""

from __future__ import annotations

import io
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from multimodal.data.caption_dataset import IMAGE_ERRORS, none_readable, why_unreadable
from multimodal.data.layouts import CAPTIONLESS, Problem, is_held_out, read_layout, resolve_format
from multimodal.errors import DatasetLayoutError


@dataclass
class SplitCounts:
    """What one split holds (after leaving out what cannot be read)."""

    images: int = 0
    captions: list[int] = field(default_factory=list)  # captions per image
    files: int = 0  # parquet/arrow files of the split (0: a layout not counted in files)
    rows: int = 0  # their rows of the split, readable or not
    unreadable: int = 0
    first_unreadable: str | None = None  # "FILE: why"


@dataclass
class Report:
    """What `check` found: the layout, each split's counts, every caption and every problem."""

    layout: str
    splits: dict[str, SplitCounts] = field(default_factory=dict)
    caption_texts: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    held_out: bool = False

    @property
    def trains(self) -> bool:
        return not any(problem.fatal for problem in self.problems)


def _unreadable(path: str | os.PathLike | None, data: bytes | None = None) -> str | None:
    """Why an image (a file, or a shard's bytes) cannot be read, or None."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            image.verify()
    except IMAGE_ERRORS as error:
        return f"unreadable image ({why_unreadable(error)})"
    return None


def _count(report: Report, counts: SplitCounts, where: str | os.PathLike, captions: list[str], unreadable: str | None) -> None:
    """One image and its captions into the split's counts, or, when it cannot be read, a problem
    that leaves it out (not fatal: training skips such images too)."""
    if unreadable:
        report.problems.append(Problem(where, unreadable, fatal=False))
        counts.unreadable += 1
        counts.first_unreadable = counts.first_unreadable or f"{where}: {unreadable}"
        return
    counts.images += 1
    counts.captions.append(len(captions))
    report.caption_texts += captions


def _check_shards(data_dir: str, report: Report, caption_column: str, val_fraction: float, open_images: bool) -> None:
    # webdataset loads only for shards
    from multimodal.data.webdataset_source import CAPTION_KEYS, IMAGE_KEYS, captions_of, scan_shard, shard_lists

    train, val = shard_lists(data_dir)
    report.held_out = val is None
    for split, shards in (("train", train), ("val", val or train)):
        counts = report.splits.setdefault(split, SplitCounts())
        for shard in shards:
            for key, files in scan_shard(shard, read=CAPTION_KEYS + (IMAGE_KEYS if open_images else ())).items():
                if report.held_out and is_held_out(key, val_fraction) != (split == "val"):
                    continue
                where = f"{shard}: sample {key}"
                image = next((k for k in IMAGE_KEYS if k in files), None)
                if image is None:
                    report.problems.append(Problem(where, f"no image (files: {', '.join(files)})", fatal=False))
                    continue
                captions = captions_of(files, caption_column)
                if isinstance(captions, str):
                    fatal = not captions.startswith("no caption")  # an image without caption is left out
                    report.problems.append(Problem(where, captions, fatal=fatal))
                    continue
                _count(report, counts, where, captions, open_images and _unreadable(None, files[image]))


def _unreadable_cell(cell: object, folder: Path) -> str | None:
    """Why a parquet row's image cell gives no readable image, or None."""
    from multimodal.data.parquet_source import image_bytes

    try:
        data = image_bytes(cell, folder)
    except IMAGE_ERRORS as error:
        return f"no image ({why_unreadable(error)})"
    return _unreadable(None, data)


def _check_tables(data_dir: str, report: Report, caption_column: str, image_column: str, val_fraction: float,
                  open_images: bool) -> None:
    # pyarrow loads only for parquet
    from multimodal.data.parquet_source import captions_of, hub_image_column, read_rows, split_groups

    image_column = hub_image_column(image_column)
    columns = [caption_column] + ([image_column] if open_images else [])  # one row group's images at a time
    for split in ("train", "val"):
        groups, report.held_out = split_groups(data_dir, split, image_column, caption_column, val_fraction)
        counts = report.splits.setdefault(split, SplitCounts())
        counts.files = len({group.path for group in groups})
        for group in groups:
            for row, _, cells in read_rows(group, columns):
                counts.rows += 1
                where = f"{group.path}: row {row}"
                try:
                    captions = captions_of(cells[caption_column], caption_column)
                except ValueError as error:  # left out, as training leaves it out
                    report.problems.append(Problem(where, str(error), fatal=False))
                    continue
                _count(report, counts, where, captions,
                       open_images and _unreadable_cell(cells[image_column], group.path.parent))


def check(data_dir: str | os.PathLike, data_format: str = "auto", caption_column: str = "text",
          image_column: str = "file_name", val_fraction: float = 0.05, open_images: bool = True) -> Report:
    """Everything `python -m multimodal.data check` reports about `data_dir`."""
    report = Report("unknown")
    try:
        report.layout = resolve_format(data_dir, data_format)
        name = report.layout
        if name == "webdataset":
            _check_shards(str(data_dir), report, caption_column, val_fraction, open_images)
        elif name == "parquet":
            _check_tables(str(data_dir), report, caption_column, image_column, val_fraction, open_images)
        else:
            layout = read_layout(data_dir, name, caption_column, image_column, val_fraction)
            report.problems, report.held_out = layout.problems, layout.held_out
            for split, records in layout.splits.items():
                counts = report.splits.setdefault(split, SplitCounts())
                for path, captions in zip(records.paths, records.captions):
                    captions = [] if name in CAPTIONLESS else captions  # the empty caption is no caption
                    _count(report, counts, path, captions, open_images and _unreadable(path))
    except DatasetLayoutError as error:  # not the layout at all: the one problem to report
        report.splits.clear()  # counted only partly
        report.problems.append(Problem(str(data_dir), str(error)))
        return report
    for split, counts in report.splits.items():
        if counts.images == 0 and counts.unreadable:
            report.problems.append(Problem(str(data_dir), none_readable(counts.unreadable, f"the {split} split",
                                                                        counts.first_unreadable, hint="")))
        elif counts.images == 0 and report.trains:
            what = "image" if report.layout in CAPTIONLESS else "captioned image"
            report.problems.append(Problem(str(data_dir), f"no readable {what} in the {split} split"))
    return report


def token_lengths(captions: list[str]) -> list[int]:
    """Tokens of each caption by the bundled BERT's tokenizer (what the text encoder reads)."""
    from transformers import AutoTokenizer

    from multimodal.models.text_encoder import bundled_bert_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_bert_path())
    return [len(ids) for ids in tokenizer(captions, add_special_tokens=False)["input_ids"]] if captions else []


def format_report(data_dir: str | os.PathLike, report: Report, data_format: str = "auto") -> str:
    """The report as `check` prints it: the layout, the counts, then one line per problem."""
    how = "detected" if data_format == "auto" else "as asked"
    lines = [f"{data_dir}: {report.layout} layout ({how})"]
    for split, counts in report.splits.items():
        per = counts.captions
        names = "rows" if counts.files else "file names"
        held = f", held out: --val-fraction of the {names}" if split == "val" and report.held_out else ""
        spread = f" ({min(per)}–{max(per)} per image, mean {sum(per) / len(per):.1f})" if per else ""
        files = f", from {counts.rows} rows in {counts.files} file{'s' * (counts.files > 1)}" if counts.files else ""
        captions = "no captions" if report.layout in CAPTIONLESS else f"{sum(per)} captions{spread}"
        lines.append(f"  {split}: {counts.images} images, {captions}{files}{held}")
    if report.layout in CAPTIONLESS:
        images = sum(counts.images for counts in report.splits.values())
        lines.append(f"{report.layout}: {images} images, no captions — trains the autoencoder and an unconditional "
                     "diffusion model")
    lengths = token_lengths(report.caption_texts)
    if lengths:
        lines.append(f"  caption length in tokens: min {min(lengths)}, median {statistics.median(lengths):g}, "
                     f"max {max(lengths)}")
    fatal = sum(problem.fatal for problem in report.problems)
    if report.problems:
        lines.append(f"{len(report.problems)} problems ({fatal} stop training, the others are left out):")
        lines += [f"  {'error' if p.fatal else 'warning'}: {p}" for p in report.problems]
    lines.append("it would train" if report.trains else f"it would not train: {fatal} problems to fix")
    return "\n".join(lines)
