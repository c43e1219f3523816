"""Batches for training: images stacked, captions tokenised, inside the DataLoader workers."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Tokenize = Callable[[Sequence[str]], dict[str, torch.Tensor]]
Negatives = Callable[[str], list[str]]


class CaptionCollator:
    """Stacks a list of samples into one batch. `tokenize` is the text encoder's own (captions
    → input_ids and attention_mask), so training tokenises exactly as generation does.

    With `negatives` (a caption → at most `per_caption` hard negatives), the batch also holds
    `per_caption` of them for each caption, caption after caption: "negative_captions", their
    "negative_input_ids" and "negative_attention_mask", and "negative_valid" (B, per_caption),
    False where a caption had fewer (the place is filled with the caption itself, never counted)."""

    def __init__(self, tokenize: Tokenize, negatives: Negatives | None = None, per_caption: int = 0) -> None:
        self.tokenize = tokenize
        self.negatives = negatives
        self.per_caption = per_caption

    def __call__(self, items: list[dict]) -> dict:
        captions = [item["caption"] for item in items]
        batch = {
            "images": torch.stack([item["image"] for item in items]),
            "image_ids": [item["image_id"] for item in items],
            "captions": captions,
        } | self.tokenize(captions)
        if self.negatives is None:
            return batch
        found = [self.negatives(caption)[: self.per_caption] for caption in captions]
        negatives = [n for caption, ns in zip(captions, found) for n in ns + [caption] * (self.per_caption - len(ns))]
        tokens = self.tokenize(negatives)
        return batch | {
            "negative_captions": negatives,
            "negative_input_ids": tokens["input_ids"],
            "negative_attention_mask": tokens["attention_mask"],
            "negative_valid": torch.tensor([[k < len(ns) for k in range(self.per_caption)] for ns in found]),
        }
