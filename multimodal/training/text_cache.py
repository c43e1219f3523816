"""Caching what frozen parts compute: a frozen BERT's token states per caption, and a frozen
image encoder's latent per image, so that later epochs never run them again."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

from multimodal.models import ImageEncoder, TextEncoder


class TextFeatureCache:
    """BERT token states per distinct caption, computed once (frozen BERT only), up to
    `max_bytes`: past it the least recently used captions are dropped and computed again
    when next seen. Unbounded, COCO's 590k captions would hold about 6 GB in every process.

    States are kept unpadded, in float16 on the CPU, and always served from the cache (also
    the first time), so a run resumed with an empty cache sees exactly the same numbers.
    """

    ENTRY_OVERHEAD = 200  # bytes a cached caption costs besides its states: its key and the tensor object

    def __init__(self, text_encoder: TextEncoder, max_bytes: int | None = None) -> None:
        self.text_encoder = text_encoder
        self.max_bytes = max_bytes
        self.store: OrderedDict[str, torch.Tensor] = OrderedDict()  # least recently used first
        self.bytes = 0
        self.bert_calls = 0
        self.evicted = 0

    def clear(self) -> None:
        self.store.clear()
        self.bytes = 0

    def _cost(self, caption: str, states: torch.Tensor) -> int:
        return states.numel() * states.element_size() + len(caption) + self.ENTRY_OVERHEAD

    @torch.no_grad()
    def states(self, captions: list[str], input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, hidden) token states for a tokenised batch, on the ids' device."""
        rows = {caption: self.store.get(caption) for caption in captions}
        missing = [i for i, caption in enumerate(captions) if rows[caption] is None]
        if missing:
            self.bert_calls += 1
            computed = self.text_encoder.token_states(input_ids[missing], attention_mask[missing])
            for row, i in enumerate(missing):
                length = int(attention_mask[i].sum())
                rows[captions[i]] = computed[row, :length].to("cpu", torch.float16)
        for caption, states in rows.items():
            if caption in self.store:
                self.store.move_to_end(caption)
            else:
                self.store[caption] = states
                self.bytes += self._cost(caption, states)
        while self.max_bytes is not None and self.bytes > self.max_bytes and len(self.store) > len(rows):
            caption, states = self.store.popitem(last=False)
            self.bytes -= self._cost(caption, states)
            self.evicted += 1
        # Padded and copied over in float16 (half the bytes), widened on the device.
        padded = torch.nn.utils.rnn.pad_sequence([rows[caption] for caption in captions], batch_first=True)
        padded = F.pad(padded, (0, 0, 0, input_ids.shape[1] - padded.shape[1]))
        return padded.to(input_ids.device).float()


class LatentCache:
    """The image encoder's latent z per training image, computed once: for stages that do not
    train the encoder (the diffusion stage), on data sets small enough to keep in memory.
    Like the text cache, it serves every batch from the cache, the first one too."""

    def __init__(self, image_encoder: ImageEncoder) -> None:
        self.image_encoder = image_encoder
        self.store: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def latents(self, image_ids: list[int], images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) latents for a batch of images, on the images' device."""
        missing = [i for i, image_id in enumerate(image_ids) if image_id not in self.store]
        if missing:
            computed = self.image_encoder.encode(images[missing])
            for row, i in enumerate(missing):
                self.store[image_ids[i]] = computed[row].to("cpu", torch.float16)
        return torch.stack([self.store[image_id] for image_id in image_ids]).to(images.device).float()
