"""Caption text as people read it, from the tokenizer's decoded word pieces, and the word pieces
a set of captions uses. Torch-free, so the ONNX runner (`multimodal.onnx_run`) writes the same
captions as the PyTorch model."""

from __future__ import annotations

import re
from typing import Any, Iterable


def clean_caption(text: str) -> str:
    """Readable text from the decoded tokens. The tokenizer already drops [CLS], [SEP], [PAD]
    and [UNK]; what is left is BERT's reserved [unusedN] slots, a '##' word piece with no word
    before it, and spaces around punctuation: "##s a man ' s t - shirt ." → "s a man's t-shirt."."""
    text = re.sub(r"\[unused\d+\]", " ", text)
    text = re.sub(r"(^|\s)##", r"\1", text)
    text = re.sub(r"\s+([.,!?;:%)\]}])", r"\1", text)  # no space before closing punctuation
    text = re.sub(r"([(\[{$])\s+", r"\1", text)  # nor after an opening bracket
    text = re.sub(r"(\w)\s*(['-])\s*(\w)", r"\1\2\3", text)  # it ' s, don ' t, t - shirt
    text = re.sub(r"(\d)\.\s+(\d)", r"\1.\2", text)  # 3. 5 → 3.5
    return re.sub(r"\s+", " ", text).strip()


def token_ids(tokenizer: Any, captions: Iterable[str]) -> list[int]:
    """The BERT token ids of `captions`, [CLS] and [SEP] included, each once and sorted: the
    vocabulary of a caption decoder trained on them. Each distinct word is tokenised once, not
    each caption: BERT splits text at whitespace before its wordpieces, so the ids are the same."""
    words = sorted({word for caption in captions for word in caption.split()})
    pieces = tokenizer(words, add_special_tokens=False)["input_ids"] if words else []
    return sorted({tokenizer.cls_token_id, tokenizer.sep_token_id}.union(*pieces))
