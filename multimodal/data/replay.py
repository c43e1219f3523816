"""Replay for fine-tuning: the new data with some images of an earlier data set mixed in.

A model fine-tuned only on new images learns that everything looks like them (shapes drawn
orange captioned "orange" even when yellow). Training on a few of the images it learned from
before keeps that knowledge in the loss, as DreamBooth's prior preservation does with images
the base model draws itself.
"""

from __future__ import annotations

import numpy as np
import torch


class WithReplay(torch.utils.data.Dataset):
    """`new` followed by `num_images` images of `earlier` (a fixed, seeded choice).

    Image ids of the replayed images are shifted past the new set's, so the caches keyed by
    image id (latents, text features) never mistake one for the other."""

    def __init__(self, new: torch.utils.data.Dataset, earlier: torch.utils.data.Dataset, num_images: int,
                 seed: int = 0) -> None:
        self.new, self.earlier = new, earlier
        order = np.random.default_rng(seed).permutation(len(earlier))
        self.replayed = [int(i) for i in order[:num_images]]
        self.id_offset = max(new.references, default=-1) + 1

    def set_epoch(self, epoch: int) -> None:
        self.new.set_epoch(epoch)
        self.earlier.set_epoch(epoch)

    @property
    def references(self) -> dict[int, list[str]]:
        """Every image id → all its captions, the replayed images under their shifted ids."""
        earlier = self.earlier.references
        earlier_ids = list(earlier)
        return self.new.references | {self.id_offset + i: earlier[earlier_ids[i]] for i in self.replayed}

    def __len__(self) -> int:
        return len(self.new) + len(self.replayed)

    def __getitem__(self, index: int) -> dict:
        if index < len(self.new):
            return self.new[index]
        position = self.replayed[index - len(self.new)]
        item = dict(self.earlier[position])
        item["image_id"] = self.id_offset + position
        return item
