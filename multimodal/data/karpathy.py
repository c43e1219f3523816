"""Karpathy's split of COCO (Karpathy & Fei-Fei, "Deep Visual-Semantic Alignments", 2015): the
`dataset_coco.json` papers' captioning and retrieval numbers are measured on, user-supplied,
beside the COCO images.

    <root>/dataset_coco.json
    <root>/train2014/ and val2014/   the images where the file says (filepath/filename), or
    <root>/train2017/ and val2017/   the same images under their 2017 names (<cocoid:012d>.jpg)

Its images are split train, restval, val and test (82,783 + 30,504 + 5,000 + 5,000): train +
restval train, val is the validation split training checks itself on, and test is what
evaluate.py measures (retrieval over its 5k images and averaged over its five 1k folds, as papers
report). Captions are the file's "raw" sentences. COCO's train2017 holds most of the test images,
so a checkpoint trained with the coco layout has seen them: evaluate.py warns
(`coco_overlap`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from multimodal.data.caption_dataset import CaptionRecords
from multimodal.errors import DatasetLayoutError

KARPATHY_FILE = "dataset_coco.json"
SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}  # ours → the file's
LAYOUT = (f"the karpathy layout is {KARPATHY_FILE} (Karpathy's split) beside COCO's image folders: train2014/ and "
          "val2014/, or train2017/ and val2017/")
COCO_LAYOUTS = ("coco", "karpathy")  # layouts whose image ids are COCO's


def _entry_problem(entry: object) -> str | None:
    """What is wrong with one entry of the file's images, or None."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    split, sentences = entry.get("split"), entry.get("sentences")
    if split not in {name for names in SPLITS.values() for name in names}:
        return f"has split {json.dumps(split)[:40]}; Karpathy's are train, restval, val and test"
    if not isinstance(entry.get("filename"), str) or not entry["filename"]:
        return "has no filename"
    if not isinstance(entry.get("cocoid"), int) or isinstance(entry["cocoid"], bool):
        return "has no integer cocoid"
    if not isinstance(sentences, list) or not all(isinstance(s, dict) and isinstance(s.get("raw"), str)
                                                  for s in sentences):
        return "has no list of sentences with their raw text"
    return None


class _Folders:
    """File names per folder, listed once: 123k is_file calls would take minutes on a network disk."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def has(self, folder: Path, name: str) -> bool:
        if folder not in self._names:
            self._names[folder] = {entry.name for entry in os.scandir(folder)} if folder.is_dir() else set()
        return name in self._names[folder]


def _image_path(root: Path, entry: dict, folders: _Folders) -> Path | None:
    """Where an entry's image is: as the file says, else under COCO 2017's name for it."""
    filepath = entry.get("filepath") if isinstance(entry.get("filepath"), str) else ""
    candidates = [(root / filepath, entry["filename"])]
    candidates += [(root / folder, f"{entry['cocoid']:012d}.jpg") for folder in ("train2017", "val2017")]
    for folder, name in candidates:
        if folders.has(folder, name):
            return folder / name
    return None


def read_karpathy(root: str | os.PathLike) -> tuple[dict[str, CaptionRecords], dict[str, int]]:
    """The train (train + restval), val and test records of Karpathy's split at `root`, each
    image's id its COCO id, and per split how many listed images are not on disk (left out).
    A DatasetLayoutError in one line for a file that is not Karpathy's split."""
    root = Path(root)
    path = root / KARPATHY_FILE
    if not path.is_file():
        raise DatasetLayoutError(f"{path} not found; {LAYOUT}")
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except UnicodeDecodeError as error:
        raise DatasetLayoutError(f"{path} is not UTF-8 text ({error.reason}); {LAYOUT}") from None
    except json.JSONDecodeError as error:
        raise DatasetLayoutError(f"{path}:{error.lineno} is not JSON ({error.msg}); {LAYOUT}") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DatasetLayoutError(f"{path} is not Karpathy's split: it has no list of images; {LAYOUT}")
    ours = {theirs: split for split, names in SPLITS.items() for theirs in names}
    splits = {split: CaptionRecords() for split in SPLITS}
    num_missing = dict.fromkeys(SPLITS, 0)
    folders, seen = _Folders(), set()
    for index, entry in enumerate(images):
        problem = _entry_problem(entry)
        if problem:
            raise DatasetLayoutError(f"{path}: images[{index}] {problem}")
        cocoid = entry["cocoid"]
        if cocoid in seen:
            raise DatasetLayoutError(f"{path}: images[{index}] repeats cocoid {cocoid}")
        seen.add(cocoid)
        captions = list(dict.fromkeys(c for c in (s["raw"].strip() for s in entry["sentences"]) if c))
        if not captions:
            continue  # nothing to learn from or score against
        split = ours[entry["split"]]
        image = _image_path(root, entry, folders)
        if image is None:
            num_missing[split] += 1
            continue
        records = splits[split]
        records.paths.append(str(image))
        records.captions.append(captions)
        records.image_ids.append(cocoid)
        records.image_info[cocoid] = {"file_name": image.name, "id": cocoid, "karpathy_split": entry["split"]}
    for split, records in splits.items():
        if not records.paths:
            missing = f" ({num_missing[split]} listed, none on disk)" if num_missing[split] else ""
            raise DatasetLayoutError(f"{path}: no captioned image of the {split} split{missing}; {LAYOUT}")
    return splits, num_missing


def coco_overlap(
    evaluated_ids: list[int],
    evaluated_dir: str | os.PathLike,
    evaluated_format: str,
    trained_dir: str | os.PathLike,
    trained_format: str,
) -> int | None:
    """How many of `evaluated_ids` (images of COCO data read as `evaluated_format`) are training
    images of the COCO data a checkpoint was trained on: COCO ids compared, so Karpathy's split
    and COCO 2017 are matched whatever their file names. None where there is nothing to compare:
    either side not COCO's, the same data read the same way (its splits are disjoint), or the
    training data not readable now."""
    from multimodal.data.layouts import read_layout, resolve_format

    try:
        evaluated = (Path(evaluated_dir).resolve(), resolve_format(evaluated_dir, evaluated_format))
        trained = (Path(trained_dir).resolve(), resolve_format(trained_dir, trained_format))
        if evaluated == trained or evaluated[1] not in COCO_LAYOUTS or trained[1] not in COCO_LAYOUTS:
            return None
        training_ids = set(read_layout(trained_dir, trained[1]).splits["train"].image_ids)
    except (DatasetLayoutError, OSError):
        return None
    return sum(image_id in training_ids for image_id in evaluated_ids)
