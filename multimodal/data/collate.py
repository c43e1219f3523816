"""Batches for training: images stacked, captions tokenised, inside the DataLoader workers."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Tokenize = Callable[[Sequence[str]], dict[str, torch.Tensor]]


class CaptionCollator:
    """Stacks a list of samples into one batch. `tokenize` is the text encoder's own (captions
    → input_ids and attention_mask), so training tokenises exactly as generation does."""

    def __init__(self, tokenize: Tokenize) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list[dict]) -> dict:
        captions = [item["caption"] for item in items]
        return {
            "images": torch.stack([item["image"] for item in items]),
            "image_ids": [item["image_id"] for item in items],
            "captions": captions,
        } | self.tokenize(captions)
