"""COCO captions as image–caption pairs.

Also reads the built-in shapes dataset, which is written in the same layout. Problems a
long run should survive (a few missing or corrupt files) are counted and reported once;
problems that make the run pointless (wrong folder, wrong JSON) stop it with one clear line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from multimodal.data.caption_dataset import CaptionDataset, CaptionRecords, warn_missing
from multimodal.data.listing import listed_file, read_text
from multimodal.errors import DatasetLayoutError


def expected_layout(root: str | os.PathLike) -> str:
    """One line naming the folders and files the loader looks for under `root`."""
    return (
        f"expected COCO 2017 captions at {root}/{{train2017,val2017}}/*.jpg and "
        f"{root}/annotations/captions_{{train,val}}2017.json "
        "(no COCO at hand? train on the built-in set with --preset shapes)"
    )


def _layout_error(root: Path, problem: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{problem}; {expected_layout(root)}")


def _show(value: object) -> str:
    """A JSON value as a message quotes it (cut short)."""
    return json.dumps(value)[:60]


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load_captions(root: Path, annotation_file: Path, image_dir: Path
                   ) -> tuple[dict[int, tuple[dict, Path]], dict[int, list[str]]]:
    """(image id → its entry and its file in `image_dir`, image id → its captions in annotation-id
    order) of a captions file, every entry checked where it is read: one DatasetLayoutError names
    the first that is not as COCO writes it (its file and its index in the list), so no command
    meets it later as a traceback."""
    try:
        data = json.loads(read_text(annotation_file))
    except json.JSONDecodeError as err:
        raise _layout_error(root, f"{annotation_file}:{err.lineno}: not JSON ({err.msg})") from None
    except RecursionError:
        raise _layout_error(root, f"{annotation_file} is not a COCO JSON file (nested too deeply)") from None
    if not isinstance(data, dict):
        raise _layout_error(root, f"{annotation_file} is not a COCO JSON file (a JSON {type(data).__name__}, "
                            "not an object with images and annotations)")
    images, annotations = data.get("images"), data.get("annotations")
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise _layout_error(root, f"{annotation_file} is not a COCO captions file (needs images and captions)")
    entries: dict[int, tuple[dict, Path]] = {}
    index_of: dict[int, int] = {}
    for i, image in enumerate(images):
        where = f"{annotation_file}: images[{i}]"
        if not isinstance(image, dict):
            raise DatasetLayoutError(f"{where} is {_show(image)}, not an object with an id and a file_name")
        image_id, file_name = image.get("id"), image.get("file_name")
        if not _is_id(image_id):
            raise DatasetLayoutError(f"{where} has id {_show(image_id)}, not an integer")
        if image_id in entries:
            raise DatasetLayoutError(f"{where} has id {image_id}, as images[{index_of[image_id]}] has; "
                                     "every image needs its own id")
        if not isinstance(file_name, str):
            got = f"file_name {_show(file_name)}, not a string" if "file_name" in image else "no file_name"
            raise DatasetLayoutError(f"{where} (id {image_id}) has {got}")
        path = listed_file(image_dir, file_name)
        if isinstance(path, str):
            raise DatasetLayoutError(f"{where} (id {image_id}) has file_name {_show(file_name)}, which {path}")
        entries[image_id], index_of[image_id] = (image, path), i
    captions: dict[int, list[tuple[int, str]]] = {}
    for i, annotation in enumerate(annotations):
        where = f"{annotation_file}: annotations[{i}]"
        if not isinstance(annotation, dict):
            raise DatasetLayoutError(f"{where} is {_show(annotation)}, not an object with an image_id and a caption")
        if "caption" not in annotation:
            raise _layout_error(root, f"{annotation_file} is not a COCO captions file (annotations[{i}] has no "
                                "caption: an instances or keypoints file?)")
        for key, value in (("id", annotation.get("id", 0)), ("image_id", annotation.get("image_id"))):
            if not _is_id(value):
                raise DatasetLayoutError(f"{where} has {key} {_show(value)}, not an integer")
        caption = annotation["caption"]
        if not isinstance(caption, str):
            raise DatasetLayoutError(f"{where} (id {annotation.get('id')}) has caption {_show(caption)}, not a string")
        captions.setdefault(annotation["image_id"], []).append((annotation.get("id", 0), caption))
    in_order = {image_id: [c for _, c in sorted(caps, key=lambda pair: pair[0])] for image_id, caps in captions.items()}
    return entries, in_order


def read_coco(root: str | os.PathLike, split: str) -> tuple[CaptionRecords, int]:
    """The captioned images of `<root>/{split}2017` in image-id order, and how many images the
    annotation file lists that are not on disk (left out). Images without a caption are left out."""
    root = Path(root)
    image_dir = root / f"{split}2017"
    annotation_file = root / "annotations" / f"captions_{split}2017.json"
    if root.is_dir() and not any(root.iterdir()):
        raise _layout_error(root, f"dataset folder {root} is empty")
    if root.exists() and not root.is_dir():
        raise _layout_error(root, f"dataset folder {root} is a file, not a folder")
    for path, what in ((root, "dataset folder"), (image_dir, "image folder"), (annotation_file, "annotation file")):
        if not path.exists():
            raise _layout_error(root, f"{what} {path} not found")
    if not image_dir.is_dir():
        raise _layout_error(root, f"image folder {image_dir} is a file, not a folder")
    entries, captions_of = _load_captions(root, annotation_file, image_dir)

    on_disk = {entry.name for entry in os.scandir(image_dir)}
    records = CaptionRecords()
    num_missing = 0
    for image_id in sorted(entries):
        entry, path = entries[image_id]
        captions = [c for c in (c.strip() for c in captions_of.get(image_id, [])) if c]
        if not captions:
            continue  # nothing to learn from an image without text
        if (path.parent != image_dir or path.name not in on_disk) and not path.is_file():
            num_missing += 1
            continue
        records.paths.append(str(path))
        records.image_ids.append(image_id)
        records.image_info[image_id] = entry
        records.captions.append(captions)
    if not records.paths:
        raise _layout_error(root, f"no captioned image of {annotation_file.name} found in {image_dir}")
    return records, num_missing


class CocoCaptionDataset(CaptionDataset):
    """Image–caption pairs from `<root>/{split}2017` and `<root>/annotations/captions_{split}2017.json`
    (see `CaptionDataset` for how samples are drawn); missing images are left out with one warning."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        image_size: int = 224,
        all_pairs: bool = False,
        seed: int = 0,
        cache_images: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        records, num_missing = read_coco(self.root, split)
        warn_missing(num_missing, self.root / "annotations" / f"captions_{split}2017.json", self.root / f"{split}2017")
        super().__init__(records, str(self.root / f"{split}2017"), image_size, all_pairs, seed, cache_images,
                         num_missing)
