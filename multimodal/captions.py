"""Caption text as people read it, from the tokenizer's decoded word pieces. Torch-free, so the
ONNX runner (`multimodal.onnx_run`) writes the same captions as the PyTorch model."""

from __future__ import annotations

import re


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
