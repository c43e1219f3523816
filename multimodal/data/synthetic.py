"""Writing a built-in synthetic set (shapes, scenes) to disk in COCO's layout, atomically.

A set is described by its parameters (counts, image size, seed, options), recorded in a JSON
file written last. The same parameters always give byte-identical files, so a folder holding
them is complete and is never drawn again; a folder of someone's own data is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from multimodal.errors import DatasetLayoutError


class BuiltinFolderError(DatasetLayoutError, FileExistsError):
    """The folder asked for holds something other than the built-in set: it is left alone."""


def read_params(root: Path, params_file: str) -> dict | None:
    """The parameters a built-in set under `root` was written with, or None."""
    try:
        return json.loads((root / params_file).read_text())
    except (OSError, ValueError):
        return None


def write_split(
    folder: Path,
    split: str,
    samples: Iterable[tuple[Image.Image, dict, list[str]]],
    first_id: int,
    description: str,
    version: int,
) -> None:
    """Write `{split}2017/NNNNNNNNNNNN.png` and `annotations/captions_{split}2017.json` from
    (picture, what it shows, its captions) triples; what it shows goes into the image's entry."""
    (folder / f"{split}2017").mkdir(parents=True)
    images, annotations = [], []
    for offset, (picture, info, captions) in enumerate(samples):
        image_id = first_id + offset
        file_name = f"{image_id:012d}.png"
        picture.save(folder / f"{split}2017" / file_name)
        size = picture.width
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size} | info)
        for caption in captions:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    coco = {"info": {"description": description, "version": version}, "licenses": [], "images": images,
            "annotations": annotations}
    (folder / "annotations").mkdir(exist_ok=True)
    with open(folder / "annotations" / f"captions_{split}2017.json", "w") as f:
        json.dump(coco, f)


def write_atomically(
    root: str | os.PathLike, params_file: str, params: dict, kind: str, write: Callable[[Path], None]
) -> Path:
    """Make `root` hold the set `write(folder)` draws, unless it already holds these `params`.

    The set is built in a temporary sibling folder and renamed into place at the end, so an
    interrupted run never leaves a half set that looks complete; `params_file` is written last.
    A folder without `params_file` (someone's own data) is refused, never overwritten.
    """
    root = Path(root)
    if read_params(root, params_file) == params:
        return root
    if root.exists() and not root.is_dir():
        raise BuiltinFolderError(f"{root} is a file, not a folder for the {kind} dataset; choose another folder")
    if root.exists() and any(root.iterdir()) and read_params(root, params_file) is None:
        raise BuiltinFolderError(
            f"{root} exists and is not a {kind} dataset (no {params_file}); refusing to overwrite it, "
            "choose another folder"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    (tmp / params_file).write_text(json.dumps(params, indent=2) + "\n")

    # Move an old set (other parameters, or interrupted) aside, then swap the new one in.
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    if root.exists():
        root.rename(old)
    try:
        tmp.rename(root)
    except OSError:
        # Another process (e.g. another rank) finished first: keep its identical result.
        shutil.rmtree(tmp, ignore_errors=True)
        if read_params(root, params_file) != params:
            raise
    shutil.rmtree(old, ignore_errors=True)
    return root


def ensure_drawn(
    root: str | os.PathLike, params_file: str, wanted: dict[str, Any], generate: Callable[..., Path], seed: int
) -> None:
    """A built-in set with the `wanted` parameters (image size, options) under `root`:
    `generate(root, seed=seed, **wanted)` where the folder is missing or empty, and again with
    the earlier counts, seed and options where the set there was drawn with other `wanted`
    values. A
    folder of someone's own data is left alone (the loader then reads it as it is)."""
    root = Path(root)
    params = read_params(root, params_file)
    if params is not None and any(params.get(name) != value for name, value in wanted.items()):
        recorded = {name: value for name, value in params.items() if name != "format_version"}
        generate(root, **(recorded | wanted))
    elif not root.exists() or (root.is_dir() and not any(root.iterdir())):
        generate(root, seed=seed, **wanted)


def draw_builtin_set(
    root: str | os.PathLike,
    name: str,
    params_file: str,
    params: dict[str, Any],
    kinds: tuple[Sequence[Any], Sequence[Any]],
    draw: Callable[[Any, np.random.Generator], Image.Image],
    describe: Callable[[Any], dict],
    captions: Callable[[Any], list[str]],
    progress: bool,
) -> Path:
    """Write a built-in set under `root` (atomically, unless it already holds these `params`,
    which name num_train, num_val and seed): each split cycles through its `kinds` (train, val),
    and picture i of a split draws its jitter from its own generator, so the same parameters
    always give byte-identical files."""
    num_train, num_val, seed = params["num_train"], params["num_val"], params["seed"]

    def samples(split_kinds: Sequence[Any], count: int, split_key: int, bar: tqdm) -> Iterator:
        for i in range(count):
            kind = split_kinds[i % len(split_kinds)]
            yield draw(kind, np.random.default_rng([seed, split_key, i])), describe(kind), captions(kind)
            bar.update()

    def write(folder: Path) -> None:
        with tqdm(total=num_train + num_val, desc=f"{name} → {root}", unit="img", disable=not progress) as bar:
            write_split(folder, "train", samples(kinds[0], num_train, 0, bar), 1,
                        f"multimodal built-in {name} dataset", params["format_version"])
            write_split(folder, "val", samples(kinds[1], num_val, 1, bar), num_train + 1,
                        f"multimodal built-in {name} dataset", params["format_version"])

    return write_atomically(root, params_file, params, name, write)
