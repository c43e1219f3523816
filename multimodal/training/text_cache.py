"""Caching what frozen parts compute: a frozen BERT's token states per caption, and a frozen
image encoder's latent (or a frozen pretrained trunk's features) per image, so that later epochs
never run them again."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

from multimodal.models import TextEncoder


class TextFeatureCache:
    """BERT token states per distinct caption, computed once (frozen BERT only), in at most
    `max_bytes`: past it the least recently used captions are dropped and computed again when
    next seen. Unbounded, COCO's 590k captions would take several GB in every process.

    States live in float16 slots of max_text_length × hidden, in blocks allocated once and
    reused: measured, one small tensor per caption made the process grow 3–6× more than the
    states themselves (glibc's heap fragments between them and BERT's large temporaries), so
    the bound would not have held. Every batch is served from the cache's float16 values (also
    the first time), so a run resumed with an empty cache sees exactly the same numbers.
    """

    BLOCK = 1024  # slots allocated at a time

    def __init__(self, text_encoder: TextEncoder, max_bytes: int | None = None) -> None:
        self.text_encoder = text_encoder
        self.slot_shape = (text_encoder.max_length, text_encoder.hidden_size)
        slot_bytes = self.slot_shape[0] * self.slot_shape[1] * torch.finfo(torch.float16).bits // 8
        self.max_slots = None if max_bytes is None else max(1, max_bytes // slot_bytes)
        self.blocks: list[torch.Tensor] = []  # (≤ BLOCK, max_text_length, hidden) float16 each
        self.store: OrderedDict[str, tuple[int, int]] = OrderedDict()  # caption → (slot, tokens); oldest first
        self.free: list[int] = []
        self.bert_calls = 0
        self.evicted = 0

    @property
    def bytes(self) -> int:
        """Memory the cached states take (their slots, used or not)."""
        return sum(block.numel() * block.element_size() for block in self.blocks)

    def clear(self) -> None:
        self.store.clear()
        self.blocks.clear()
        self.free.clear()

    def _slot(self, index: int) -> torch.Tensor:
        return self.blocks[index // self.BLOCK][index % self.BLOCK]

    def _take_slot(self) -> int:
        """A free slot: an unused one, a new block's, or the least recently used caption's."""
        if not self.free:
            capacity = sum(len(block) for block in self.blocks)
            size = self.BLOCK if self.max_slots is None else min(self.BLOCK, self.max_slots - capacity)
            if size > 0:
                self.blocks.append(torch.zeros(size, *self.slot_shape, dtype=torch.float16))
                self.free = list(range(capacity + size - 1, capacity - 1, -1))
            else:
                _, (slot, _) = self.store.popitem(last=False)
                self.evicted += 1
                return slot
        return self.free.pop()

    @torch.no_grad()
    def states(self, captions: list[str], input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, hidden) token states for a tokenised batch, on the ids' device."""
        width = input_ids.shape[1]
        out = torch.zeros(len(captions), width, self.slot_shape[1], dtype=torch.float16)
        missing = []
        for i, caption in enumerate(captions):
            if caption in self.store:
                self.store.move_to_end(caption)
                slot, length = self.store[caption]
                out[i, :length] = self._slot(slot)[:length]
            else:
                missing.append(i)
        if missing:
            self.bert_calls += 1
            computed = self.text_encoder.token_states(input_ids[missing], attention_mask[missing])
            for row, i in enumerate(missing):
                length = int(attention_mask[i].sum())
                out[i, :length] = computed[row, :length].to("cpu", torch.float16)
                if captions[i] not in self.store:  # a caption twice in one batch is stored once
                    slot = self._take_slot()
                    self._slot(slot)[:length] = out[i, :length]
                    self.store[captions[i]] = (slot, length)
        # Copied over in float16 (half the bytes), widened on the device.
        return out.to(input_ids.device).float()


class LatentCache:
    """What a frozen function of the images computes, per training image, once: the image
    encoder's latent z for stages that do not train the encoder (the diffusion stage), or a
    frozen pretrained trunk's features while the parts after it learn; on data sets small enough
    to keep in memory. Like the text cache, it serves every batch from the cache, the first one too."""

    def __init__(self, compute: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.compute = compute
        self.store: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def latents(self, image_ids: list[int], images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) latents for a batch of images, on the images' device."""
        missing = [i for i, image_id in enumerate(image_ids) if image_id not in self.store]
        if missing:
            computed = self.compute(images[missing])
            for row, i in enumerate(missing):
                self.store[image_ids[i]] = computed[row].to("cpu", torch.float16)
        # Stacked outside autocast: CPU autocast refuses float16 inputs to torch.stack.
        with torch.autocast(images.device.type, enabled=False):
            return torch.stack([self.store[image_id] for image_id in image_ids]).to(images.device).float()
