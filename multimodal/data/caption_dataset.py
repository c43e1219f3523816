"""Image–caption pairs from a list of records, whatever layout they were read from.

Every layout reader (COCO, image folder, paired files, captions.txt) produces the same
`CaptionRecords`, and `CaptionDataset` turns them into training samples: so caption choice,
image caching and the handling of unreadable files are decided here, once.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from multimodal.data.transforms import from_uint8, load_rgb, resize_and_crop, to_uint8_tensor
from multimodal.errors import DatasetLayoutError

# What PIL raises on unreadable, truncated or hostile files.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class CaptionRecords:
    """One split: image files, each with its captions (at least one), an integer id and
    whatever the layout knows about it (`image_info`, e.g. the shapes set's attributes)."""

    paths: list[str] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)
    image_info: dict[int, dict] = field(default_factory=dict)

    def add(self, path: str, captions: list[str], info: dict | None = None) -> None:
        image_id = len(self.paths)
        self.paths.append(path)
        self.captions.append(captions)
        self.image_ids.append(image_id)
        self.image_info[image_id] = info or {"file_name": Path(path).name}

    def pairs(self) -> list[tuple[str, str]]:
        """Every (image path, caption), in record order: what two layouts of one set share."""
        return [(path, caption) for path, caps in zip(self.paths, self.captions) for caption in caps]


class CaptionDataset(torch.utils.data.Dataset):
    """Samples from `records`.

    By default a sample is an image with one of its captions, drawn afresh each epoch from
    (seed, epoch, index) alone, so results do not depend on worker processes and a resumed
    run sees exactly the captions it would have seen. Call `set_epoch` before each epoch
    (it reaches DataLoader workers only when they are started anew, i.e. without
    `persistent_workers`). `all_pairs=True` makes every (image, caption) pair a sample,
    as retrieval evaluation needs. `cache_images` keeps each image, once decoded and resized,
    in memory as uint8 (3 bytes a pixel): for small sets such as the shapes set, read in the
    main process (a DataLoader worker's cache would die with it at the epoch's end).
    `num_missing`: images the layout listed but the disk lacks (already left out).
    """

    def __init__(
        self,
        records: CaptionRecords,
        where: str,
        image_size: int = 224,
        all_pairs: bool = False,
        seed: int = 0,
        cache_images: bool = False,
        num_missing: int = 0,
    ) -> None:
        self.where = where  # the folder (and split) named in messages
        self.paths = records.paths
        self.image_info = records.image_info
        self._image_ids = records.image_ids
        self._captions = records.captions
        self.all_pairs = all_pairs
        self.seed = seed
        self.epoch = 0
        self.num_missing = num_missing
        self.resize_and_crop = resize_and_crop(image_size)
        self.cache_images = cache_images
        self._cache: dict[int, torch.Tensor] = {}  # image index → its uint8 pixels, at the model's size
        # all_pairs: sample k is caption _pairs[k, 1] of image _pairs[k, 0].
        self._pairs = (
            np.array([(i, c) for i, caps in enumerate(self._captions) for c in range(len(caps))])
            if all_pairs
            else None
        )
        self._corrupt: set[int] = set()
        self._refuse_if_unreadable()

    def _refuse_if_unreadable(self) -> None:
        """Read images in order until one can be read (the first, for a sound set), so that a set
        none of whose images can be read is refused here, in one line, and not by a loader
        worker, in the middle of an epoch. The unreadable ones it meets are skipped from then on."""
        failed: list[tuple[int, Exception]] = []
        for image_index in range(len(self.paths)):
            try:
                self._pixels(image_index)
            except IMAGE_ERRORS as err:
                failed.append((image_index, err))
                continue
            for index, err in failed:
                self._unreadable(index, err)
            return
        if failed:
            index, err = failed[0]
            raise DatasetLayoutError(none_readable(len(self.paths), self.where,
                                                   f"{self.paths[index]}: {why_unreadable(err)}"))

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
            except IMAGE_ERRORS as err:
                self._unreadable(image_index, err)
                continue
            return {
                "image": from_uint8(pixels),
                "caption": caption,
                "image_id": self._image_ids[image_index],
            }
        raise DatasetLayoutError(f"none of the {len(self.paths)} images in {self.where} can be read any more "
                                 "(one could when the run started): were they moved or deleted?")

    def _unreadable(self, image_index: int, err: Exception) -> None:
        """Leave an image out from now on; the first one is reported."""
        if not self._corrupt:
            warnings.warn(
                f"unreadable image {self.paths[image_index]} ({why_unreadable(err)}); using a "
                "neighbouring sample instead (further ones are counted in num_skipped)",
                # Attributed to this file, not to the DataLoader that called us: scripts
                # silence torch's own warnings, and this one must still be seen.
                stacklevel=1,
            )
        self._corrupt.add(image_index)


def why_unreadable(error: Exception) -> str:
    """Why PIL could not read an image, without the file object it names for an image in memory."""
    return "not an image file PIL can identify" if isinstance(error, Image.UnidentifiedImageError) else str(error)


def none_readable(count: int, where: str, first: str, what: str = "images",
                  hint: str = " (python -m multimodal.data check lists every unreadable file)") -> str:
    """The one line for a split none of whose images (or `what`) can be read."""
    if count == 1:
        return f"the only {what.removesuffix('s')} in {where} could not be read: {first}{hint}"
    return f"none of the {count} {what} in {where} could be read; first: {first}{hint}"


def warn_missing(num_missing: int, listed_in: str | os.PathLike, folder: str | os.PathLike) -> None:
    """The one warning for images a layout lists that are not on disk (they are left out)."""
    if num_missing:
        warnings.warn(f"{num_missing} images listed in {listed_in} are missing from {folder}; skipping them",
                      stacklevel=3)
