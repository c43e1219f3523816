"""Caching a frozen BERT's features so that later epochs never run it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multimodal.models import TextEncoder


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
