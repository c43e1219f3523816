"""Caching a frozen BERT's token states per caption, so that later epochs never run it again
(its image-side counterpart is `multimodal.training.latent_cache`)."""

from __future__ import annotations

from collections import OrderedDict

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

