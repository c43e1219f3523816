"""COCO captions as image–caption pairs, read with pycocotools.

Also reads the built-in shapes dataset, which is written in the same layout. Problems a
long run should survive (a few missing or corrupt files) are counted and reported once;
problems that make the run pointless (wrong folder, wrong JSON) stop it with one clear line.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from pycocotools.coco import COCO

from multimodal.data.caption_dataset import CaptionDataset, CaptionRecords, warn_missing
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


def _load_coco(root: Path, annotation_file: Path) -> COCO:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(annotation_file))
    except (ValueError, AssertionError, KeyError, TypeError) as err:
        raise _layout_error(root, f"{annotation_file} is not a COCO JSON file ({err!r})") from err
    annotations = coco.dataset.get("annotations")
    if (
        not isinstance(coco.dataset.get("images"), list)
        or not isinstance(annotations, list)
        or not all("caption" in a and "image_id" in a for a in annotations)
    ):
        raise _layout_error(
            root, f"{annotation_file} is not a COCO captions file (needs images and captions)"
        )
    return coco


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
    coco = _load_coco(root, annotation_file)

    on_disk = {entry.name for entry in os.scandir(image_dir)}
    records = CaptionRecords()
    num_missing = 0
    for image_id in sorted(coco.imgs):
        anns = sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a.get("id", 0))
        captions = [c for c in (a["caption"].strip() for a in anns) if c]
        if not captions:
            continue  # nothing to learn from an image without text
        file_name = coco.imgs[image_id]["file_name"]
        if file_name not in on_disk and not (image_dir / file_name).is_file():
            num_missing += 1
            continue
        records.paths.append(str(image_dir / file_name))
        records.image_ids.append(int(image_id))
        records.image_info[int(image_id)] = coco.imgs[image_id]
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
