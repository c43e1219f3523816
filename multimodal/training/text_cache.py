"""Caching what frozen parts compute: a frozen BERT's token states per caption, and a frozen
image encoder's latent per image, so that later epochs never run them again."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multimodal.models import ImageEncoder, TextEncoder


class TextFeatureCache:
    """BERT token states per distinct caption, computed once (frozen BERT only).

    States are kept unpadded, in float16 on the CPU, and always served from the cache (also
    the first time), so a run resumed with an empty cache sees exactly the same numbers.
    """

    def __init__(self, text_encoder: TextEncoder) -> None:
        self.text_encoder = text_encoder
        self.store: dict[str, torch.Tensor] = {}
        self.bert_calls = 0

    def clear(self) -> None:
        self.store.clear()

    @torch.no_grad()
    def states(self, captions: list[str], input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, hidden) token states for a tokenised batch, on the ids' device."""
        missing = [i for i, caption in enumerate(captions) if caption not in self.store]
        if missing:
            self.bert_calls += 1
            computed = self.text_encoder.token_states(input_ids[missing], attention_mask[missing])
            for row, i in enumerate(missing):
                length = int(attention_mask[i].sum())
                self.store[captions[i]] = computed[row, :length].to("cpu", torch.float16)
        # Padded and copied over in float16 (half the bytes), widened on the device.
        rows = torch.nn.utils.rnn.pad_sequence([self.store[caption] for caption in captions], batch_first=True)
        rows = F.pad(rows, (0, 0, 0, input_ids.shape[1] - rows.shape[1]))
        return rows.to(input_ids.device).float()


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
        # Each row widened before stacking: CPU autocast (bf16) refuses to stack float16 tensors.
        return torch.stack([self.store[image_id].float() for image_id in image_ids]).to(images.device)
