"""COCO captions as image–caption pairs, read with pycocotools.

Also reads the built-in shapes dataset, which is written in the same layout. Problems a
long run should survive (a few missing or corrupt files) are counted and reported once;
problems that make the run pointless (wrong folder, wrong JSON) stop it with one clear line.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from multimodal.data.transforms import from_uint8, load_rgb, resize_and_crop, to_uint8_tensor
from multimodal.errors import DatasetLayoutError

# What PIL raises on unreadable, truncated or hostile files.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


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


class CocoCaptionDataset(torch.utils.data.Dataset):
    """Image–caption pairs from `<root>/{split}2017` and `<root>/annotations/captions_{split}2017.json`.

    By default a sample is an image with one of its captions, drawn afresh each epoch from
    (seed, epoch, index) alone, so results do not depend on worker processes and a resumed
    run sees exactly the captions it would have seen. Call `set_epoch` before each epoch
    (it reaches DataLoader workers only when they are started anew, i.e. without
    `persistent_workers`). `all_pairs=True` makes every (image, caption) pair a sample,
    as retrieval evaluation needs. `cache_images` keeps each image, once decoded and resized,
    in memory as uint8 (3 bytes a pixel): for small sets such as the shapes set, read in the
    main process (a DataLoader worker's cache would die with it at the epoch's end).
    """

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
        self.all_pairs = all_pairs
        self.seed = seed
        self.epoch = 0
        self.resize_and_crop = resize_and_crop(image_size)
        self.cache_images = cache_images
        self._cache: dict[int, torch.Tensor] = {}  # image index → its uint8 pixels, at the model's size

        image_dir = self.root / f"{split}2017"
        annotation_file = self.root / "annotations" / f"captions_{split}2017.json"
        if self.root.is_dir() and not any(self.root.iterdir()):
            raise _layout_error(self.root, f"dataset folder {self.root} is empty")
        if self.root.exists() and not self.root.is_dir():
            raise _layout_error(self.root, f"dataset folder {self.root} is a file, not a folder")
        for path, what in (
            (self.root, "dataset folder"),
            (image_dir, "image folder"),
            (annotation_file, "annotation file"),
        ):
            if not path.exists():
                raise _layout_error(self.root, f"{what} {path} not found")
        coco = _load_coco(self.root, annotation_file)

        on_disk = {entry.name for entry in os.scandir(image_dir)}
        self.paths: list[str] = []  # image files, in image-id order
        self.image_info: dict[int, dict] = {}  # the annotation file's record of each image kept
        self._image_ids: list[int] = []
        self._captions: list[list[str]] = []
        self.num_missing = 0
        for image_id in sorted(coco.imgs):
            anns = sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a.get("id", 0))
            captions = [c for c in (a["caption"].strip() for a in anns) if c]
            if not captions:
                continue  # nothing to learn from an image without text
            file_name = coco.imgs[image_id]["file_name"]
            if file_name not in on_disk and not (image_dir / file_name).is_file():
                self.num_missing += 1
                continue
            self.paths.append(str(image_dir / file_name))
            self._image_ids.append(int(image_id))
            self.image_info[int(image_id)] = coco.imgs[image_id]
            self._captions.append(captions)
        if not self.paths:
            raise _layout_error(
                self.root, f"no captioned image of {annotation_file.name} found in {image_dir}"
            )
        if self.num_missing:
            warnings.warn(
                f"{self.num_missing} images listed in {annotation_file} are missing from "
                f"{image_dir}; skipping them",
                stacklevel=2,
            )

        # all_pairs: sample k is caption _pairs[k, 1] of image _pairs[k, 0].
        self._pairs = (
            np.array([(i, c) for i, caps in enumerate(self._captions) for c in range(len(caps))])
            if all_pairs
            else None
        )
        self._corrupt: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        """Choose which caption each image gets this epoch."""
        self.epoch = epoch

    @property
    def captions(self) -> list[str]:
        """All distinct captions, in dataset order (e.g. to cache their text features)."""
        return list(dict.fromkeys(c for caps in self._captions for c in caps))

    @property
    def references(self) -> dict[int, list[str]]:
        """Every image id → all its captions (what caption metrics compare against)."""
        return dict(zip(self._image_ids, self._captions))

    @property
    def num_corrupt(self) -> int:
        """Images found unreadable so far (in this process)."""
        return len(self._corrupt)

    @property
    def num_skipped(self) -> int:
        """Images left out: missing at start-up plus unreadable so far."""
        return self.num_missing + self.num_corrupt

    def __len__(self) -> int:
        return len(self._pairs) if self._pairs is not None else len(self.paths)

    def _sample(self, index: int) -> tuple[int, str]:
        if self._pairs is not None:
            image_index, caption_index = (int(v) for v in self._pairs[index])
        else:
            image_index = index
            rng = np.random.default_rng([self.seed, self.epoch, index])
            caption_index = int(rng.integers(len(self._captions[index])))
        return image_index, self._captions[image_index][caption_index]

    def _pixels(self, image_index: int) -> torch.Tensor:
        pixels = self._cache.get(image_index)
        if pixels is None:
            pixels = to_uint8_tensor(self.resize_and_crop(load_rgb(self.paths[image_index])))
            if self.cache_images:
                self._cache[image_index] = pixels
        return pixels

    def __getitem__(self, index: int) -> dict:
        """A dict of image (FloatTensor [3, S, S] in [-1, 1]), caption and image_id.

        An unreadable image is replaced by the next readable sample, so the same index
        always gives the same sample and one bad file does not stop training.
        """
        for offset in range(len(self)):
            image_index, caption = self._sample((index + offset) % len(self))
            if image_index in self._corrupt:
                continue
            try:
                pixels = self._pixels(image_index)
            except _IMAGE_ERRORS as err:
                if not self._corrupt:
                    warnings.warn(
                        f"unreadable image {self.paths[image_index]} ({err}); using a "
                        "neighbouring sample instead (further ones are counted in num_skipped)",
                        # Attributed to this file, not to the DataLoader that called us: scripts
                        # silence torch's own warnings, and this one must still be seen.
                        stacklevel=1,
                    )
                self._corrupt.add(image_index)
                continue
            return {
                "image": from_uint8(pixels),
                "caption": caption,
                "image_id": self._image_ids[image_index],
            }
        raise RuntimeError(f"no readable image in {self.root / f'{self.split}2017'}")
