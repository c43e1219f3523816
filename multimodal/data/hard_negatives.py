"""Hard negative captions: a caption with its two objects, or their colours, swapped.

A batch of random pictures almost never holds "a red circle on the left and a blue square on the
right" beside its mirror, so the contrastive loss never asks the encoders to tell the two apart,
and the text embedding learns a bag of words (on the scenes set a caption and its mirror came
out at cosine 0.995, and retrieval picked between them by chance). NegCLIP (Yuksekgonul et al.,
"When and why vision-language models behave like bags-of-words", ICLR 2023) adds such swapped
captions as extra negatives for each image; these are ours, for captions that name two
"<colour> <shape>" objects of the built-in sets.
"""

from __future__ import annotations

import re

from multimodal.data.shapes import PALETTE, SHAPES

NEGATIVES_PER_CAPTION = 2  # the objects swapped, and their colours swapped
_OBJECT = re.compile(rf"\b({'|'.join(PALETTE)}) ({'|'.join(SHAPES)})\b")


def swapped_captions(caption: str) -> list[str]:
    """The caption with its two objects exchanged ("which one is where") and with only their
    colours exchanged ("which colour is which shape"), the second only where it differs from the
    first (two objects of one shape give one). [] unless the caption names exactly two objects of
    different colours."""
    found = list(_OBJECT.finditer(caption))
    if len(found) != 2 or found[0][1] == found[1][1]:
        return []
    (one, other), between = found, slice(found[0].end(), found[1].start())

    def rewrite(first: str, second: str) -> str:
        return caption[: one.start()] + first + caption[between] + second + caption[other.end():]

    return list(dict.fromkeys([rewrite(other[0], one[0]), rewrite(f"{other[1]} {one[2]}", f"{one[1]} {other[2]}")]))
