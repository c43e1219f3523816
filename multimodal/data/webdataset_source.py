"""WebDataset tar shards, streamed with the `webdataset` library: never all in memory.

A sample is the files of one key in a shard: an image (jpg, png, webp, …) and its captions,
a `.txt` (one caption per line) or a `.json` (`caption_column`: a text or a list). Shards are
split across torchrun processes (`split_by_node`: shard i goes to process i mod N) and then
across each process's loader workers (`split_by_worker`), so no sample is seen twice in an
epoch; their order, and a shuffle buffer's, follow (seed, epoch) alone, so a resumed run can
skip exactly the batches it has already trained on. The shards are counted once (their tar
headers, not their images) so that every process knows how many steps an epoch has.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import webdataset as wds
from webdataset.tariterators import base_plus_ext
from webdataset.utils import pytorch_worker_info

from multimodal.data.caption_dataset import IMAGE_ERRORS, none_readable, why_unreadable
from multimodal.data.layouts import VAL_FOLDERS, is_held_out
from multimodal.data.listing import UnreadableText, decode_text
from multimodal.paths import SHARD_SUFFIXES
from multimodal.data.transforms import from_uint8, load_rgb, resize_and_crop, to_uint8_tensor
from multimodal.errors import DatasetLayoutError

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
CAPTION_KEYS = ("txt", "json")
SHUFFLE_BUFFER = 1000


def shard_lists(data_dir: str) -> tuple[list[str], list[str] | None]:
    """(train shards, val shards or None): a brace pattern or one .tar file (train only), or a
    folder of .tar files, or a folder with train/ and validation/ (val/, test/) folders of them."""
    root = Path(data_dir)
    if root.is_dir():
        def tars(folder: Path) -> list[str]:
            return sorted(str(p) for p in folder.glob("*") if p.name.endswith(SHARD_SUFFIXES)) if folder.is_dir() else []

        if tars(root / "train"):
            val = next((tars(root / name) for name in VAL_FOLDERS if tars(root / name)), None)
            return tars(root / "train"), val
        shards = tars(root)
    else:
        shards = wds.shardlists.expand_urls(data_dir)
    missing = [shard for shard in shards if not Path(shard).is_file()]
    if missing or not shards:
        raise DatasetLayoutError(f"WebDataset shard {missing[0] if missing else data_dir} not found "
                                 f"({len(missing)} of {len(shards)} named shards are missing)")
    return shards, None


def sample_id(key: str) -> int:
    """A sample's integer id, fixed by its key (the image ids other layouts number)."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:7], "big")


def scan_shard(shard: str, read: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """key → {extension: its bytes when the extension is in `read`, else its size} for the files
    of one shard, in shard order: from the tar headers alone unless asked to read."""
    samples: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                key, extension = base_plus_ext(member.name)
                if not member.isfile() or key is None:
                    continue
                extension = extension.lower()
                wanted = extension in read
                samples.setdefault(key, {})[extension] = tar.extractfile(member).read() if wanted else member.size
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DatasetLayoutError(f"{shard} is not a readable tar shard ({error})") from None
    return samples


def _samples_in(shard: str, keys: set[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of the image and caption files of each sample of `shard` whose key
    is in `keys`, one sample in memory at a time (a sample's files lie together in a shard)."""
    current, files = None, {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                key, extension = base_plus_ext(member.name)
                if not member.isfile() or key not in keys or extension.lower() not in IMAGE_KEYS + CAPTION_KEYS:
                    continue
                if key != current:
                    if files:
                        yield current, files
                    current, files = key, {}
                files[extension.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DatasetLayoutError(f"{shard} is not a readable tar shard ({error})") from None
    if files:
        yield current, files


def captions_of(sample: dict[str, Any], caption_column: str) -> list[str] | str:
    """The captions of a sample (its .txt, else its .json), or what is wrong with them."""
    extension = next((k for k in CAPTION_KEYS if k in sample), None)
    if extension is None:
        return "no caption (.txt or .json)"
    try:
        text = decode_text(sample[extension], f".{extension}")
    except UnreadableText as error:
        return str(error)
    if extension == "txt":
        captions = list(dict.fromkeys(c for c in (line.strip() for line in text.splitlines()) if c))
        return captions or "empty caption (.txt)"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return f".json is not JSON ({error.msg})"
    except RecursionError:
        return ".json is not JSON (nested too deeply)"
    if not isinstance(record, dict) or caption_column not in record:
        columns = ", ".join(map(repr, record)) if isinstance(record, dict) else "none"
        return f".json has no key {caption_column!r}; its keys are {columns} (choose another with --caption-column)"
    cell = record[caption_column]
    cells = cell if isinstance(cell, list) else [cell]
    captions = [c.strip() for c in cells if isinstance(c, str)]
    if len(captions) != len(cells) or not cells:
        return f".json {caption_column!r} must be a text or a list of texts"
    return captions if all(captions) else "empty caption (.json)"


class WebDatasetSource(torch.utils.data.IterableDataset):
    """The samples of one split of WebDataset shards, streamed; `len()` is the number of samples
    an epoch trains on (every process sees as many: the smallest share, × processes)."""

    def __init__(self, data_dir: str, split: str = "train", image_size: int = 224, caption_column: str = "text",
                 val_fraction: float = 0.05, seed: int = 0, shuffle: bool | None = None) -> None:
        self.data_dir = data_dir
        self.split = split
        self.caption_column = caption_column
        self.val_fraction = val_fraction
        self.seed = seed
        self.epoch = 0
        self.shuffle = split == "train" if shuffle is None else shuffle
        self.by_rank = split == "train"  # validation runs on one process and reads every shard
        self.resize_and_crop = resize_and_crop(image_size)
        train, val = shard_lists(data_dir)
        self.hold_out = val is None  # val is the samples whose key hashes below val_fraction
        self.shards = train if split == "train" or val is None else val
        self.rank, self.world_size = pytorch_worker_info()[:2] if self.by_rank else (0, 1)
        if len(self.shards) < self.world_size:
            raise DatasetLayoutError(f"{len(self.shards)} shards for {self.world_size} processes: every process needs "
                                     "at least one (write more, smaller shards with python -m multimodal.data convert)")
        self.references: dict[int, list[str]] = {}  # val: every image id → all its captions
        counts, kept_keys = [], []
        for shard in self.shards:
            samples = scan_shard(shard, read=CAPTION_KEYS if split != "train" else ())
            kept = [(key, files) for key, files in samples.items() if self.keep(key, files)]
            counts.append(len(kept))
            kept_keys.append({key for key, _ in kept})
            for key, files in kept if split != "train" else ():
                captions = captions_of(files, caption_column)
                if isinstance(captions, list):
                    self.references[sample_id(key)] = captions
        self.share = min(sum(counts[rank :: self.world_size]) for rank in range(self.world_size))  # per process
        self.length = self.share * self.world_size
        if self.length == 0:
            raise DatasetLayoutError(f"no {split} sample (an image and a .txt or .json) in the shards of {data_dir}")
        self.image_info: dict[int, dict] = {}
        self.num_skipped = 0  # unreadable images and samples without captions, in this process
        self._refuse_if_unreadable(kept_keys)

    def _refuse_if_unreadable(self, kept_keys: list[set[str]]) -> None:
        """Decode the split's samples in shard order until one can be used (the first, for a sound
        set), so that shards none of whose samples can be read are refused here, in one line, and
        not met as an epoch without a step. `kept_keys`: each shard's samples of this split."""
        first, tried = None, 0
        for shard, keys in zip(self.shards, kept_keys):
            for key, files in _samples_in(shard, keys):
                image = next((files[k] for k in IMAGE_KEYS if k in files), None)
                if image is None:  # a sample's files apart in the shard: judged where its image lies
                    continue
                tried += 1
                captions = captions_of(files, self.caption_column)
                try:
                    if isinstance(captions, str):
                        raise ValueError(captions)
                    load_rgb(io.BytesIO(image))
                    return
                except IMAGE_ERRORS as error:
                    first = first or f"{shard}: sample {key}: {why_unreadable(error)}"
        raise DatasetLayoutError(none_readable(tried, f"the {self.split} split of {self.data_dir}", first,
                                               what="samples"))

    def keep(self, key: str, files: dict) -> bool:
        """Whether a sample (its key and files) belongs to this split."""
        if not any(k in files for k in IMAGE_KEYS) or not any(k in files for k in CAPTION_KEYS):
            return False
        return not self.hold_out or is_held_out(key, self.val_fraction) == (self.split != "train")

    def set_epoch(self, epoch: int) -> None:
        """Choose this epoch's shard order, shuffle and captions."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _shard_order(self, shards: Iterator[dict]) -> Iterator[dict]:
        shards = list(shards)
        if self.shuffle:
            random.Random(f"{self.seed}/{self.epoch}").shuffle(shards)  # the same in every worker
        yield from shards

    def _decode(self, sample: dict) -> dict | None:
        key = sample["__key__"]
        captions = captions_of(sample, self.caption_column)
        extension = next(k for k in IMAGE_KEYS if k in sample)
        try:
            if isinstance(captions, str):
                raise ValueError(captions)
            pixels = to_uint8_tensor(self.resize_and_crop(load_rgb(io.BytesIO(sample[extension]))))
        except IMAGE_ERRORS as error:
            if not self.num_skipped:
                warnings.warn(f"skipping sample {key} of {sample['__url__']} ({why_unreadable(error)}); further "
                              "ones are counted", stacklevel=1)
            self.num_skipped += 1
            return None
        image_id = sample_id(key)
        rng = np.random.default_rng([self.seed, self.epoch, image_id])
        return {"image": from_uint8(pixels), "caption": captions[int(rng.integers(len(captions)))], "image_id": image_id}

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        stages = [wds.SimpleShardList(self.shards)]
        stages += [wds.split_by_node] if self.by_rank else []
        stages += [self._shard_order, wds.split_by_worker, wds.tarfile_to_samples()]
        stages += [wds.select(lambda sample: self.keep(sample["__key__"], sample))]
        if self.shuffle:
            buffer_seed = f"{self.seed}/{self.epoch}/{self.rank}/{worker.id if worker else 0}"
            stages += [wds.shuffle(SHUFFLE_BUFFER, rng=random.Random(buffer_seed))]
        stages += [wds.map(self._decode), wds.select(lambda sample: sample is not None)]
        return iter(wds.DataPipeline(*stages))
